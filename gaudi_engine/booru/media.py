"""Download the catalogue's images into `data/images/xx/yy/md5.ext` and record them in `media`.

How a file comes to count as `ok`, so that a killed run never leaves a bad file counted:
1. a worker streams the body into a hidden temp file in the target folder (`.md5.ext.<pid>.part`),
   hashing as it goes; a short body, an md5 mismatch (originals) or a file Pillow cannot fully
   decode (decompression-bomb guarded) is retried with backoff, then reported `failed`;
2. only a verified temp file is renamed (`os.replace`, atomic) onto the final path;
3. the main thread alone writes `media` rows, in batches, after the rename.
A kill between 2 and 3 leaves a verified file without a row: the next run re-verifies and adopts
it. Temp files a kill leaves behind are removed by the next run (per md5 as it is processed, and
all of them when the `.fetch-images.running` marker shows the last run did not finish).

Back-pressure: every worker shares the client's pace (booru/rate_limit.py), so a 429 slows them
all and costs no try. A file that fails for a reason that can pass (5xx, resets, short bodies)
is tried once more after all the others before it counts as failed; a rerun tries it again.

Statuses: ok / failed (with the error) / not_downloadable (known md5, no URL) / not_image
(mp4, webm, zip, swf, ...). Banned posts have no md5 at all, so they have no `media` row; the
summary (and `catalogue.queries.counts`) count them from `posts`.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urljoin, urlsplit

from ..errors import GaudiError
from ..progress import Progress
from .images import IMAGE_EXTS, ImageError, normalise_ext, verify_image

VARIANTS = ("original", "sample")
CHUNK = 1 << 16
FLUSH_EVERY = 32          # media rows per transaction
FLUSH_SECONDS = 1.0       # ... or this often, so a kill loses little


@dataclass
class MediaJob:
    md5: str
    url: str
    ext: str
    check_md5: bool
    previous: str | None  # the md5's media status before this run


class BodyError(Exception):
    """A download that came back wrong (short, wrong md5, not decodable): worth retrying."""


class FileRejected(Exception):
    """The booru's own file (md5 verified) is not a usable image: retrying cannot help."""


def upsert_media(cat, rows: Iterable[dict[str, Any]]) -> int:
    """Insert or replace `media` rows (dicts with md5, path, bytes, status, error) in one
    transaction, through Arrow rather than a row-by-row loop."""
    import pyarrow as pa

    rows = list(rows)
    if not rows:
        return 0
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    table = pa.table({
        "md5": [r["md5"] for r in rows],
        "path": [r.get("path") for r in rows],
        "bytes": pa.array([r.get("bytes") for r in rows], type=pa.int64()),
        "status": [r["status"] for r in rows],
        "error": [r.get("error") for r in rows],
        "fetched_at": pa.array([now] * len(rows), type=pa.timestamp("us")),
    })
    with cat.transaction() as cur:
        cur.register("_media_batch", table)
        try:
            cur.execute("INSERT OR REPLACE INTO media SELECT md5, path, bytes, status, error, "
                        "fetched_at FROM _media_batch")
        finally:
            cur.unregister("_media_batch")
    return len(rows)


def _variant_url(variant: str, file_url: str | None, large_url: str | None,
                 variants_json: str | None) -> str | None:
    if variant == "original":
        return file_url
    # Danbooru's `large_file_url` is the sample when the post has one, else the original; the
    # media_asset's "sample" variant is the same file, listed explicitly on newer posts.
    if variants_json:
        try:
            for v in json.loads(variants_json) or []:
                if isinstance(v, dict) and v.get("type") == "sample" and v.get("url"):
                    return v["url"]
        except (TypeError, ValueError):
            pass
    return large_url or file_url


def _absolute(url: str, base_url: str | None, origin: str | None) -> str:
    """Make a stored URL fetchable: relative URLs resolve against `base_url`; URLs on the booru
    a post was synced from follow that booru to `base_url` (a local booru on a new port)."""
    if base_url:
        if not urlsplit(url).scheme:
            return urljoin(base_url.rstrip("/") + "/", url.lstrip("/"))
        if origin and url.startswith(origin.rstrip("/") + "/") and origin.rstrip("/") != base_url.rstrip("/"):
            return base_url.rstrip("/") + url[len(origin.rstrip("/")):]
    return url


def plan_media(ws, cat, variant: str = "original", skip_existing: bool = True,
               base_url: str | None = None) -> dict[str, Any]:
    """Sort every md5 of the catalogue into work to do and statuses known without downloading."""
    if variant not in VARIANTS:
        raise GaudiError(f"unknown --variant {variant!r}: use original or sample")
    variants_sql = ("json_extract(p.raw, '$.media_asset.variants')::VARCHAR" if variant == "sample"
                    else "NULL")
    rows = cat.fetchall(f"""
        SELECT p.md5, p.file_ext, p.file_url, p.large_file_url, {variants_sql}, p.origin,
               m.status, m.path
        FROM posts p LEFT JOIN media m ON m.md5 = p.md5
        WHERE p.md5 IS NOT NULL
        ORDER BY p.id DESC""")
    no_md5 = cat.scalar("SELECT count(*) FROM posts WHERE md5 IS NULL")
    jobs: dict[str, MediaJob] = {}
    known: dict[str, dict[str, Any]] = {}   # md5 -> media row to write (not_image/not_downloadable)
    skipped: set[str] = set()
    for md5, file_ext, file_url, large_url, variants_json, origin, status, path in rows:
        if md5 in jobs or md5 in skipped:
            continue
        if status == "ok" and path and skip_existing and ws.resolve(path).is_file():
            skipped.add(md5)
            known.pop(md5, None)
            continue
        ext = normalise_ext(file_ext)
        if ext not in IMAGE_EXTS:
            if status != "not_image":
                known.setdefault(md5, {"md5": md5, "status": "not_image",
                                       "error": f"file_ext {file_ext or '(none)'} is not an image"})
            continue
        url = _variant_url(variant, file_url, large_url, variants_json)
        if not url:
            if md5 not in known and status != "not_downloadable":
                known[md5] = {"md5": md5, "status": "not_downloadable", "error": "no file URL"}
            continue
        known.pop(md5, None)  # another post with this md5 does have a URL
        url = _absolute(url, base_url, origin)
        if variant == "sample":
            ext = normalise_ext(Path(urlsplit(url).path).suffix) or ext
        jobs[md5] = MediaJob(md5=md5, url=url, ext=ext if ext in IMAGE_EXTS else "jpg",
                             check_md5=(variant == "original" or url == file_url), previous=status)
    return {"jobs": list(jobs.values()), "known": list(known.values()), "skipped": len(skipped),
            "no_md5": no_md5, "posts": cat.scalar("SELECT count(*) FROM posts")}


def _sweep_temp_files(images_dir: Path) -> int:
    """Remove every `*.part` under data/images (after a run that did not end cleanly)."""
    removed = 0
    for dirpath, _, filenames in os.walk(images_dir):
        for name in filenames:
            if name.startswith(".") and name.endswith(".part"):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except OSError:
                    pass
    return removed


def remove_stale_parts(folder: Path, md5: str) -> None:
    """Remove the hidden temp files (`.md5.*.part`) that a killed writer of this picture left."""
    for stale in folder.glob(f".{md5}.*.part"):
        try:
            stale.unlink()
        except OSError:
            pass


def _verify_file(path: Path, md5: str | None) -> int:
    """Size of a complete, decodable file whose md5 (when given) matches; else BodyError."""
    if md5 is not None:
        h = hashlib.md5()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != md5:
            raise BodyError(f"md5 mismatch (got {h.hexdigest()})")
    try:
        verify_image(path)
    except ImageError as exc:
        raise BodyError(str(exc)) from None
    return path.stat().st_size


def _download(client, job: MediaJob, tmp: Path) -> int:
    import requests

    try:
        resp = client.request(job.url, stream=True)
    except requests.RequestException as exc:
        raise BodyError(f"{type(exc).__name__}: {exc}") from None
    try:
        if resp.status_code != 200:
            raise BodyError(f"HTTP {resp.status_code} for {job.url}")
        expected = resp.headers.get("Content-Length")
        h = hashlib.md5()
        size = 0
        with open(tmp, "wb") as fh:
            for chunk in resp.iter_content(CHUNK):
                fh.write(chunk)
                h.update(chunk)
                size += len(chunk)
    except requests.RequestException as exc:  # body cut short, connection reset mid-body
        raise BodyError(f"download interrupted: {type(exc).__name__}") from None
    finally:
        resp.close()
    if expected is not None and expected.isdigit() and int(expected) != size:
        raise BodyError(f"short body ({size} of {expected} bytes)")
    if job.check_md5 and h.hexdigest() != job.md5:
        raise BodyError(f"md5 mismatch (got {h.hexdigest()})")
    try:
        verify_image(tmp)
    except ImageError as exc:
        # bytes with the right md5 are exactly the booru's file: fetching again cannot help
        raise (FileRejected if job.check_md5 else BodyError)(str(exc)) from None
    return size


def fetch_one(ws, client, job: MediaJob, tries: int = 4, adopt: bool = True) -> dict[str, Any]:
    """Bring one md5 onto disk; returns its `media` row (+ `adopted`). Runs in a worker thread."""
    target = ws.image_path(job.md5, job.ext)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target.parent, job.md5)
    row = {"md5": job.md5, "path": ws.rel(target), "bytes": None, "status": "failed", "error": None}
    if adopt and target.is_file():
        try:  # left by a run killed after the rename but before its row was written
            row.update(bytes=_verify_file(target, job.md5 if job.check_md5 else None),
                       status="ok", adopted=True)
            return row
        except BodyError:
            target.unlink(missing_ok=True)
    tmp = target.parent / f".{job.md5}.{job.ext}.{os.getpid()}.{threading.get_ident()}.part"
    error, attempt, final = "no attempt made", 0, False
    for attempt in range(max(1, tries)):
        try:
            size = _download(client, job, tmp)
            os.replace(tmp, target)
            row.update(bytes=size, status="ok", error=None)
            return row
        except BodyError as exc:
            error = str(exc)
        except FileRejected as exc:
            error, final = str(exc), True
            break
        except GaudiError as exc:  # the client gave up (retries spent) or a hard 4xx
            error, final = str(exc), getattr(exc, "status", None) is not None
            break
        except OSError as exc:  # our side: disk full, permissions -- stop the whole run
            raise GaudiError(f"cannot write {ws.rel(tmp)}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        if error.startswith("HTTP 4"):
            final = True
            break  # 404/403 on a media URL will not change by retrying
        time.sleep(min(4.0, 0.2 * 2 ** attempt) * (0.5 + random.random()))
    row["error"] = f"{error} (after {attempt + 1} tries)" if attempt else error
    row["path"] = None
    row["retryable"] = not final  # worth the end-of-run retry (5xx, resets, short bodies)
    return row


def _client_stats(client) -> dict[str, int]:
    return dict(getattr(client, "stats", None) or {})


def _size_pool(client, max_workers: int) -> None:
    """Give the client's session a connection per worker (requests keeps 10 per host)."""
    session = getattr(client, "session", None)
    if session is not None and max_workers > 10:
        from requests.adapters import HTTPAdapter

        for prefix in ("http://", "https://"):
            session.mount(prefix, HTTPAdapter(pool_connections=10, pool_maxsize=max_workers))


def fetch_images(ws, cat, client, max_workers: int = 8, skip_existing: bool = True,
                 variant: str = "original", base_url: str | None = None, tries: int = 4) -> dict:
    """Download every downloadable image of the catalogue; returns a summary dict."""
    if max_workers < 1:
        raise GaudiError("--max-workers must be at least 1")
    started = time.time()
    ws.ensure()
    _size_pool(client, max_workers)
    # A marker that lives while a run is in progress: finding it means the last run was killed,
    # so its temp files are swept (a full walk, paid only after a crash). Any orderly exit,
    # errors included, leaves no temp file (workers remove theirs) and removes the marker.
    marker = ws.images_dir / ".fetch-images.running"
    swept = _sweep_temp_files(ws.images_dir) if marker.exists() else 0
    marker.write_text(str(os.getpid()))
    try:
        plan = plan_media(ws, cat, variant=variant, skip_existing=skip_existing, base_url=base_url)
        upsert_media(cat, plan["known"])
        summary = {"posts": plan["posts"], "to_fetch": len(plan["jobs"]), "skipped": plan["skipped"],
                   "temp_files_removed": swept, "downloaded": 0, "adopted": 0, "failed": 0,
                   "retried": 0, "recovered": 0, "bytes": 0, "errors": []}
        throttled_before = _client_stats(client).get("throttled", 0)
        _run_jobs(ws, cat, client, plan["jobs"], summary, max_workers, tries, adopt=skip_existing)
    finally:
        marker.unlink(missing_ok=True)
    summary["throttled"] = _client_stats(client).get("throttled", 0) - throttled_before
    pace = getattr(client, "pace", None)
    summary["pace"] = pace.describe() if pace is not None else None
    counts = dict(cat.fetchall("SELECT status, count(*) FROM media GROUP BY status"))
    summary["not_image"] = counts.get("not_image", 0)
    summary["not_downloadable"] = counts.get("not_downloadable", 0) + plan["no_md5"]
    summary["ok_total"] = counts.get("ok", 0)
    summary["failed_total"] = counts.get("failed", 0)
    summary["seconds"] = round(time.time() - started, 2)
    return summary


def _run_jobs(ws, cat, client, jobs: list[MediaJob], summary: dict[str, Any], max_workers: int,
              tries: int, adopt: bool) -> None:
    """Workers download; this thread alone writes `media` rows, in batches. A file that failed
    for a reason that can pass (5xx, resets, short bodies) is tried once more after every other
    file, before it counts as failed: by then a struggling server has often recovered."""
    pending: list[dict[str, Any]] = []
    last_flush = time.time()

    def flush() -> None:
        nonlocal last_flush
        # one row per md5, the latest: a file failed then recovered by the end-of-run retry
        # may have both rows waiting here, and one INSERT OR REPLACE must not see two
        upsert_media(cat, {r["md5"]: r for r in pending}.values())
        pending.clear()
        last_flush = time.time()

    streak = 0  # consecutive downloads the client gave up on (network down, server gone)
    give_up_after = 2 * max_workers + 4
    last_error = ""
    retry_at_end: list[MediaJob] = []

    def record(job: MediaJob, row: dict[str, Any], last_try: bool) -> None:
        nonlocal streak, last_error
        if row["status"] == "ok":
            summary["adopted" if row.get("adopted") else "downloaded"] += 1
            summary["recovered"] += last_try
            summary["bytes"] += row["bytes"] or 0
            pending.append(row)
            streak = 0
            return
        streak = streak + 1 if "gave up after" in (row["error"] or "") else 0
        last_error = row["error"] or ""
        # a verified file from an earlier run stays ok; only its refetch failed. The failed row
        # is written at once, so a run killed before the end-of-run retry still leaves it failed
        # (and the next run retries it).
        if not (job.previous == "ok" and ws.image_path(job.md5, job.ext).is_file()):
            pending.append(row)
        if not last_try and row.get("retryable"):
            retry_at_end.append(job)
            return
        summary["failed"] += 1
        if len(summary["errors"]) < 20:
            summary["errors"].append(f"{job.md5}: {row['error']}")

    with Progress("fetch-images", total=len(jobs), unit="img") as bar, \
            ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fetch") as pool:

        def run(batch: list[MediaJob], last_try: bool) -> None:
            todo = iter(batch)
            running: dict[Future, MediaJob] = {}
            try:
                while True:
                    while len(running) < max_workers * 2:  # bounded: never queue a million futures
                        job = next(todo, None)
                        if job is None:
                            break
                        running[pool.submit(fetch_one, ws, client, job, tries, adopt)] = job
                    if not running:
                        break
                    done, _ = wait(running, timeout=FLUSH_SECONDS, return_when=FIRST_COMPLETED)
                    for fut in done:
                        job = running.pop(fut)
                        record(job, fut.result(), last_try)
                        bar.update(1, ok=summary["downloaded"] + summary["adopted"],
                                   failed=summary["failed"], mb=round(summary["bytes"] / 1e6, 1))
                    if streak >= give_up_after:
                        raise GaudiError(
                            f"stopped after {streak} downloads in a row failed (last: "
                            f"{last_error}); check the network or --base-url and run "
                            f"fetch-images again to resume")
                    if len(pending) >= FLUSH_EVERY or (pending and time.time() - last_flush >= FLUSH_SECONDS):
                        flush()
            except BaseException:
                for fut in running:
                    fut.cancel()
                flush()  # keep what finished; unfinished md5s have no row and are fetched next time
                raise

        run(jobs, last_try=False)
        if retry_at_end:
            summary["retried"] = len(retry_at_end)
            bar.set_total(len(jobs) + len(retry_at_end))
            bar.log(f"trying {len(retry_at_end)} failed downloads once more")
            run(retry_at_end, last_try=True)
        flush()


def summary_line(s: dict[str, Any]) -> str:
    """The one-line summary `gaudi fetch-images` prints."""
    rate = f", {_size(s['bytes'] / s['seconds'])}/s" if s.get("seconds") and s["bytes"] else ""
    retried = (f" ({s['recovered']} of {s['retried']} recovered by the end-of-run retry)"
               if s.get("retried") else "")
    throttled = (f"; the server asked to slow down {s['throttled']} times (429), pace now "
                 f"{s['pace']}" if s.get("throttled") else "")
    return (f"fetch-images: {s['downloaded']} downloaded ({_size(s['bytes'])}{rate}), "
            f"{s['adopted']} verified on disk, {s['skipped']} already there, "
            f"{s['failed']} failed{retried}{throttled}; "
            f"catalogue: {s['ok_total']} ok, {s['failed_total']} failed, "
            f"{s['not_downloadable']} not downloadable, {s['not_image']} not images "
            f"({s['posts']} posts) in {s['seconds']:.1f}s")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
