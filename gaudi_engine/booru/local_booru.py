"""LocalBooru: a Danbooru-compatible HTTP server on loopback over in-memory posts and media.

The demo studio serves SynthBooru through it, and the tests use it (with injected faults) as
the stand-in for danbooru.donmai.us. It answers the way Danbooru does (DESIGN §5):

- `/posts.json?tags=Q&limit=L&page=P`: newest first; `page=b<id>` (ids below), `page=a<id>`
  (ids above, the *lowest* ones, still newest first), `page=N` (410 past 1000); `limit` capped
  at 200; metatags `rating:`, `-rating:`, `status:`, `-status:deleted`, `is:sfw|nsfw`, `id:`;
  more than 2 ordinary tags -> 422 with Danbooru's JSON error body.
- `/posts/<id>.json`, `/tags.json` (`search[name_comma]`, `search[name]`, `search[category]`,
  `limit` <= 1000, `only=`), `/wiki_pages.json` (`search[title]`).
- media bytes at the posts' `file_url` / `large_file_url` / `preview_file_url` (`/data/...`).
- optional HTTP Basic auth (or `login=`/`api_key=` params): 401 on a bad or missing key.

Faults: `booru.faults` may be any object with `pick(kind, path) -> Fault | None`
(kind is "api" or "media"); see tests/fakes/danbooru.py.
"""
from __future__ import annotations

import base64
import bisect
import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

from .danbooru_query import PostQuery, QueryError, error_body, int_param

MAX_POST_LIMIT = 200
MAX_OTHER_LIMIT = 1000
MAX_PAGE = 1000
NOT_IMAGE_EXTS = {"mp4", "webm", "zip", "swf"}
IMAGE_EXTS = {"png", "jpg", "jpeg", "webp", "gif"}
_CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
                  "gif": "image/gif", "mp4": "video/mp4", "webm": "video/webm", "zip": "application/zip",
                  "swf": "application/x-shockwave-flash"}


@dataclass
class Fault:
    """One injected misbehaviour for one request."""
    status: int | None = None          # answer this HTTP status instead of the real one
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0                 # sleep before answering (slow answers / timeouts)
    truncate: float | None = None      # send only this fraction of the real body (Content-Length kept)
    drop: bool = False                 # close the connection without answering (reset)


def _image_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


class LocalBooru:
    """A Danbooru-compatible server. Add posts, `start()`, point a client at `.url`."""

    def __init__(self, auth: tuple[str, str] | None = None, block_generic_user_agents: bool = False,
                 host: str = "127.0.0.1", port: int = 0):
        self.auth = auth
        self.block_generic_user_agents = block_generic_user_agents
        self.host, self._port = host, port
        self.faults: Any = None
        self.requests: list[dict[str, Any]] = []   # (path, query, user agent, authorised) per request
        self._posts: dict[int, dict[str, Any]] = {}
        self._media: dict[str, bytes] = {}          # url path -> bytes
        self._tags: dict[str, dict[str, Any]] = {}
        self._wiki: dict[str, dict[str, Any]] = {}
        self._sorted_ids: list[int] = []            # descending, rebuilt lazily
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content -----------------------------------------------------------------------------
    def add_post(self, post: dict[str, Any], media: dict[str, bytes] | None = None) -> None:
        """Add a post dict in Danbooru's field names. URLs may be paths (`/data/...`): they are
        served by this booru and made absolute in answers. `media` maps such paths to bytes."""
        with self._lock:
            self._posts[int(post["id"])] = post
            self._sorted_ids = []
            for path, data in (media or {}).items():
                self._media[path] = data

    def add_image_post(self, post_id: int, data: bytes, file_ext: str, general: Iterable[str],
                       rating: str = "g", character: Iterable[str] = (), copyright: Iterable[str] = (),
                       artist: Iterable[str] = (), meta: Iterable[str] = (), is_deleted: bool = False,
                       is_banned: bool = False, source: str = "", created_at: str | None = None,
                       size: tuple[int, int] | None = None) -> dict[str, Any]:
        """Build a realistic post around `data` (an image or a video's bytes) and add it.
        A banned post has no md5 and no URL keys, like Danbooru's answer for restricted content."""
        md5 = hashlib.md5(data).hexdigest()
        if size is None:
            size = _image_size(data) if file_ext in IMAGE_EXTS else (640, 360)
        groups = {"general": sorted(set(general)), "character": sorted(set(character)),
                  "copyright": sorted(set(copyright)), "artist": sorted(set(artist)),
                  "meta": sorted(set(meta))}
        all_tags = sorted(set().union(*groups.values()))
        created = created_at or (datetime(2024, 1, 1, tzinfo=timezone.utc)
                                 + timedelta(minutes=post_id)).isoformat(timespec="milliseconds")
        orig = f"/data/original/{md5[:2]}/{md5[2:4]}/{md5}.{file_ext}"
        preview = f"/data/preview/{md5[:2]}/{md5[2:4]}/{md5}.jpg"
        post: dict[str, Any] = {
            "id": post_id, "created_at": created, "uploader_id": 1, "score": post_id % 17,
            "source": source, "md5": md5, "last_comment_bumped_at": None, "rating": rating,
            "image_width": size[0], "image_height": size[1], "tag_string": " ".join(all_tags),
            "fav_count": 0, "file_ext": file_ext, "last_noted_at": None, "parent_id": None,
            "has_children": False, "approver_id": None,
            "tag_count_general": len(groups["general"]), "tag_count_artist": len(groups["artist"]),
            "tag_count_character": len(groups["character"]),
            "tag_count_copyright": len(groups["copyright"]), "file_size": len(data),
            "up_score": 0, "down_score": 0, "is_pending": False, "is_flagged": False,
            "is_deleted": is_deleted, "tag_count": len(all_tags), "updated_at": created,
            "is_banned": is_banned, "pixiv_id": None, "last_commented_at": None,
            "has_active_children": False, "bit_flags": 0, "tag_count_meta": len(groups["meta"]),
            "has_large": False, "has_visible_children": False,
            "media_asset": {"id": post_id, "md5": md5, "file_ext": file_ext, "file_size": len(data),
                            "image_width": size[0], "image_height": size[1], "status": "active",
                            "variants": [
                                {"type": "180x180", "url": preview, "width": 180, "height": 180,
                                 "file_ext": "jpg"},
                                {"type": "original", "url": orig, "width": size[0],
                                 "height": size[1], "file_ext": file_ext}]},
            "tag_string_general": " ".join(groups["general"]),
            "tag_string_character": " ".join(groups["character"]),
            "tag_string_copyright": " ".join(groups["copyright"]),
            "tag_string_artist": " ".join(groups["artist"]),
            "tag_string_meta": " ".join(groups["meta"]),
            "file_url": orig, "large_file_url": orig, "preview_file_url": preview,
        }
        media = {orig: data, preview: data}
        if is_banned:  # Danbooru omits these keys for restricted posts
            for key in ("md5", "file_url", "large_file_url", "preview_file_url"):
                post.pop(key)
            post["media_asset"] = {"id": post_id, "file_ext": file_ext, "status": "active",
                                   "variants": []}
            media = {}
        self.add_post(post, media)
        for cat_id, name in ((0, "general"), (4, "character"), (3, "copyright"), (1, "artist"),
                             (5, "meta")):
            for tag in groups[name]:
                with self._lock:
                    t = self._tags.setdefault(tag, {"id": len(self._tags) + 1, "name": tag,
                                                    "post_count": 0, "category": cat_id,
                                                    "created_at": created, "updated_at": created,
                                                    "is_deprecated": False,
                                                    "words": tag.split("_")})
                    t["post_count"] += 1
        return post

    def add_tag(self, name: str, category: int = 0, post_count: int = 0, **extra: Any) -> None:
        with self._lock:
            self._tags[name] = {"id": len(self._tags) + 1, "name": name, "post_count": post_count,
                                "category": category, "is_deprecated": False, **extra}

    def add_wiki(self, title: str, body: str, other_names: Iterable[str] = (),
                 is_deleted: bool = False) -> None:
        with self._lock:
            self._wiki[title] = {"id": len(self._wiki) + 1, "title": title, "body": body,
                                 "other_names": list(other_names), "is_deleted": is_deleted,
                                 "is_locked": False, "created_at": "2024-01-01T00:00:00.000Z",
                                 "updated_at": "2024-01-02T00:00:00.000Z"}

    @property
    def post_ids(self) -> list[int]:
        """Every post id, newest first."""
        return list(self._ids_desc())

    def post(self, post_id: int) -> dict[str, Any]:
        return self._posts[post_id]

    def media_bytes(self, path: str) -> bytes | None:
        return self._media.get(urlsplit(path).path)

    @classmethod
    def from_folder(cls, folder: str | Path, **kwargs: Any) -> "LocalBooru":
        """A booru over a folder of images with sidecar `NAME.txt` tags (SynthBooru's output).
        Ids follow sorted file names (1..N); `tag_descriptions.json`, if present, becomes wiki
        pages so `sync-wiki` + `descriptions from-wiki` have something to read."""
        folder = Path(folder)
        booru = cls(**kwargs)
        images = sorted(p for p in folder.rglob("*")
                        if p.suffix.lower().lstrip(".") in IMAGE_EXTS and p.is_file()
                        and "gt" not in p.relative_to(folder).parts[:-1])
        for i, img in enumerate(images, start=1):
            sidecar = img.with_suffix(".txt")
            text = sidecar.read_text(encoding="utf-8") if sidecar.exists() else ""
            tags = [t.strip().lower().replace(" ", "_") for t in text.replace("\n", ",").split(",")]
            ext = img.suffix.lower().lstrip(".")
            booru.add_image_post(i, img.read_bytes(), "jpg" if ext == "jpeg" else ext,
                                 [t for t in tags if t], source=f"file://{img.name}")
        desc_file = folder / "tag_descriptions.json"
        if desc_file.exists():
            for tag, descs in json.loads(desc_file.read_text(encoding="utf-8")).items():
                descs = [descs] if isinstance(descs, str) else list(descs)
                body = "h4. Description\n\n" + " ".join(descs) + f"\n\nSee also [[{tag}]]."
                booru.add_wiki(tag, body)
        return booru

    # -- server ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalBooru is not running: call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Serve on a daemon thread; returns the base URL."""
        if self._server is None:
            self._server = ThreadingHTTPServer((self.host, self._port), _make_handler(self))
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "LocalBooru":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- answers -----------------------------------------------------------------------------
    def _absolute(self, post: dict[str, Any]) -> dict[str, Any]:
        base = self.url
        out = dict(post)
        for key in ("file_url", "large_file_url", "preview_file_url"):
            if isinstance(out.get(key), str) and out[key].startswith("/"):
                out[key] = base + out[key]
        asset = out.get("media_asset")
        if isinstance(asset, dict) and asset.get("variants"):
            asset = dict(asset)
            asset["variants"] = [{**v, "url": base + v["url"]} if str(v.get("url", "")).startswith("/")
                                 else v for v in asset["variants"]]
            out["media_asset"] = asset
        return out

    def _ids_desc(self) -> list[int]:
        with self._lock:
            if not self._sorted_ids:
                self._sorted_ids = sorted(self._posts, reverse=True)
            return self._sorted_ids

    def search_posts(self, tags: str, limit: int, page: str) -> list[dict[str, Any]]:
        match = PostQuery(tags)
        ids = self._ids_desc()
        asc_keys = [-i for i in ids]  # ascending, for bisect over the descending id list
        chosen: list[int] = []
        if page.startswith("b") and page[1:].isdigit():
            start = bisect.bisect_right(asc_keys, -int(page[1:]))  # first id < N
            for i in ids[start:]:
                if match(self._posts[i]):
                    chosen.append(i)
                    if len(chosen) == limit:
                        break
        elif page.startswith("a") and page[1:].isdigit():
            stop = bisect.bisect_left(asc_keys, -int(page[1:]))  # ids[:stop] are > N
            for i in reversed(ids[:stop]):
                if match(self._posts[i]):
                    chosen.append(i)
                    if len(chosen) == limit:
                        break
            chosen.sort(reverse=True)
        else:
            n = int(page) if page.isdigit() else 1
            if n > MAX_PAGE:
                raise QueryError(410, "PaginationExtension::PaginationError",
                                 f"You cannot go beyond page {MAX_PAGE}. Try narrowing your search "
                                 "terms, or upgrade your account to go beyond page 1000.")
            chosen = [i for i in ids if match(self._posts[i])][(max(n, 1) - 1) * limit:][:limit]
        return [self._absolute(self._posts[i]) for i in chosen]

    def search_tags(self, params: dict[str, str]) -> list[dict[str, Any]]:
        limit = min(int_param(params.get("limit"), 20), MAX_OTHER_LIMIT)
        rows = list(self._tags.values())
        if "search[name_comma]" in params:
            names = {n.strip() for n in params["search[name_comma]"].split(",") if n.strip()}
            rows = [t for t in rows if t["name"] in names]
        if "search[name]" in params:
            rows = [t for t in rows if t["name"] == params["search[name]"]]
        if "search[category]" in params:
            rows = [t for t in rows if str(t["category"]) == params["search[category]"]]
        rows.sort(key=lambda t: -t["id"])
        return rows[:limit]

    def search_wiki(self, params: dict[str, str]) -> list[dict[str, Any]]:
        limit = min(int_param(params.get("limit"), 20), MAX_OTHER_LIMIT)
        rows = list(self._wiki.values())
        if "search[title]" in params:
            rows = [w for w in rows if w["title"] == params["search[title]"]]
        if "search[title_comma]" in params:
            titles = set(params["search[title_comma]"].split(","))
            rows = [w for w in rows if w["title"] in titles]
        return rows[:limit]


def _make_handler(booru: LocalBooru):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "LocalBooru/1.0"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls

        def log_message(self, *args: Any) -> None:  # quiet: tests and the studio read no logs
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            parts = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            path = parts.path
            is_media = path.startswith("/data/")
            authorised = self._authorised(params)
            booru.requests.append({"path": path, "params": params, "authorised": authorised,
                                   "user_agent": self.headers.get("User-Agent", "")})
            fault = booru.faults.pick("media" if is_media else "api", path) if booru.faults else None
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.drop:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                    return
                if fault.status is not None:
                    body = fault.body if fault.body is not None else error_body(
                        "FaultInjected", f"injected {fault.status}")
                    return self._send(fault.status, body, "application/json", fault.headers)
            if booru.block_generic_user_agents and self.headers.get("User-Agent", "").lower().startswith(
                    ("python-requests", "python-urllib", "curl")):
                return self._send(403, b"<!DOCTYPE html><title>Just a moment...</title>", "text/html")
            if not authorised:
                return self._send(401, error_body("SessionLoader::AuthenticationFailure",
                                                   "Invalid API key or login"), "application/json")
            truncate = fault.truncate if fault is not None else None
            if is_media:
                data = booru.media_bytes(path)
                if data is None:
                    return self._send(404, b"not found", "text/plain")
                ext = path.rsplit(".", 1)[-1]
                return self._send(200, data, _CONTENT_TYPES.get(ext, "application/octet-stream"),
                                  truncate=truncate)
            try:
                payload = self._api(path, params)
            except QueryError as err:
                return self._send(err.status, error_body(err.error, err.message), "application/json")
            if payload is None:
                return self._send(404, error_body("ActiveRecord::RecordNotFound",
                                                   "That record was not found."), "application/json")
            return self._send(200, json.dumps(payload).encode(), "application/json; charset=utf-8",
                              truncate=truncate)

        def _authorised(self, params: dict[str, str]) -> bool:
            if booru.auth is None:
                return True
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                try:
                    login, _, key = base64.b64decode(header[6:]).decode().partition(":")
                except ValueError:
                    return False
            else:
                login, key = params.get("login", ""), params.get("api_key", "")
            return (login, key) == tuple(booru.auth)

        def _api(self, path: str, params: dict[str, str]) -> Any:
            if path == "/posts.json":
                limit = max(1, min(int_param(params.get("limit"), 20), MAX_POST_LIMIT))
                return booru.search_posts(params.get("tags", ""), limit, params.get("page", "1"))
            if path.startswith("/posts/") and path.endswith(".json"):
                pid = path[len("/posts/"):-len(".json")]
                if pid.isdigit() and int(pid) in booru._posts:
                    return booru._absolute(booru._posts[int(pid)])
                return None
            if path == "/tags.json":
                rows = booru.search_tags(params)
            elif path == "/wiki_pages.json":
                rows = booru.search_wiki(params)
            else:
                return None
            if params.get("only"):
                keep = [k.strip() for k in params["only"].split(",")]
                rows = [{k: r[k] for k in keep if k in r} for r in rows]
            return rows

        def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None,
                  truncate: float | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if truncate is not None:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            try:
                self.wfile.write(body[: int(len(body) * truncate)] if truncate is not None else body)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler
