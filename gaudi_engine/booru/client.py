"""A polite Danbooru client (DESIGN §5).

- HTTP Basic auth `login:api_key` from DanbooruSettings; the configured User-Agent on every
  request (a generic python-requests UA gets a Cloudflare challenge).
- One `SharedPace` (rate_limit.py) per client, shared by every thread, API and media alike:
  API requests keep `requests_per_second` (default 2/s); every request also follows the shared
  pace, which a 429 pauses for Retry-After (every worker waits) and lowers (AIMD), and answers
  raise again, up to `max_rps` (0: no cap; media is then bounded by the downloader's pool until
  the server pushes back).
- A 429 is back-pressure, not a failure: it does not use up a try. A request still answered 429
  after `max_throttled` seconds gives up with one line.
- Retries with exponential backoff and jitter on 5xx, timeouts, connection resets and truncated
  or invalid JSON; gives up after `max_tries` such failures with one line.
- 401/403/410/422 become one-line `RemoteError`s; 422 carries Danbooru's own message.
- The API key never appears in messages: auth travels in a header, URLs shown are stripped.
"""
from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable
from urllib.parse import urlencode, urlsplit

import requests

from ..errors import RemoteError
from ..workspace import DanbooruSettings
from .posts import loads
from .rate_limit import SharedPace, TokenBucket

__all__ = ["DanbooruClient", "SharedPace", "TokenBucket", "RETRY_STATUSES"]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 524})
MAX_RETRY_AFTER = 120.0
MAX_THROTTLED = 600.0  # seconds one request may keep getting 429s before the client gives up
TAG_BATCH = 100  # names per /tags.json request: keeps the URL well under common limits


def _shown(url: str) -> str:
    """The URL for messages: no query string (it may carry login/api_key)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _danbooru_message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        return str(body.get("message") or body.get("reason") or body.get("error") or "").strip()
    return ""


class DanbooruClient:
    """One requests.Session per client; safe to share between threads for media downloads."""

    def __init__(self, settings: DanbooruSettings, max_tries: int = 6, timeout: float = 30,
                 backoff_base: float = 1.0, backoff_max: float = 60.0,
                 on_retry: Callable[[str], None] | None = None, max_rps: float = 0.0,
                 max_throttled: float = MAX_THROTTLED):
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.max_tries = max(1, int(max_tries))
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_throttled = max_throttled
        self.on_retry = on_retry
        self.pace = SharedPace(api_rate=settings.requests_per_second, ceiling=max_rps)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = settings.user_agent
        self.session.headers["Accept"] = "application/json"
        if settings.username and settings.api_key:
            self.session.auth = (settings.username, settings.api_key)
        # requests sent, requests sent again (after a failure or a 429), 429s among the answers
        self.stats = {"requests": 0, "retries": 0, "throttled": 0}
        self._stats_lock = threading.Lock()
        self._rng = random.Random()

    # -- plumbing ----------------------------------------------------------------------------
    def url(self, url_or_path: str) -> str:
        if url_or_path.startswith(("http://", "https://")):
            return url_or_path
        return f"{self.base_url}/{url_or_path.lstrip('/')}"

    def _count(self, key: str) -> None:
        with self._stats_lock:  # workers share the client: += alone could lose counts
            self.stats[key] += 1

    def _backoff(self, attempt: int) -> float:
        # exponential with "equal jitter": half fixed, half random
        delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return delay / 2 + self._rng.uniform(0, delay / 2)

    def _fatal(self, resp: requests.Response, url: str) -> RemoteError | None:
        """A one-line error for statuses that retrying cannot fix, else None."""
        code = resp.status_code
        where = _shown(url)
        # only error answers are read here: a 200 media stream must stay unread (and unparsed)
        msg = _danbooru_message(resp) if 400 <= code < 500 and code != 429 else ""
        if code == 401:
            err = RemoteError(f"{where}: authentication failed (401): check DANBOORU_USERNAME and "
                              f"DANBOORU_API_KEY")
        elif code == 403:
            err = RemoteError(
                f"{where}: access denied (403){': ' + msg if msg else ''} - your account may lack "
                f"the rights for this, or Cloudflare challenged the request: set DANBOORU_USER_AGENT "
                f"to a descriptive User-Agent (now {self.settings.user_agent!r})")
        elif code == 410:
            err = RemoteError(f"{where}: page out of range (410){': ' + msg if msg else ''} - "
                              f"page by id (page=b<id>) instead of by number")
        elif code == 422:
            err = RemoteError(f"{where}: query rejected (422): {msg or resp.reason}")
        elif 400 <= code < 500 and code != 429:
            err = RemoteError(f"{where}: HTTP {code} {resp.reason}{': ' + msg if msg else ''}")
        else:
            return None
        err.status = code  # type: ignore[attr-defined]
        return err

    def _fetch(self, url_or_path: str, params: dict[str, Any] | None, stream: bool,
               parse_json: bool, throttle: bool | None) -> tuple[requests.Response, Any]:
        url = self.url(url_or_path)
        api_pace = (not stream) if throttle is None else throttle
        last = "no answer"
        tries = 0                   # failures only: a 429 is back-pressure and costs no try
        throttled_since: float | None = None
        in_a_row = 0                # 429s in a row for this request (backoff when no Retry-After)
        while True:
            sent_at = self.pace.acquire(api=api_pace)
            self._count("requests")
            try:
                resp = self.session.get(url, params=params, timeout=self.timeout, stream=stream)
                if resp.status_code == 429:
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
                    resp.close()
                    now = time.monotonic()
                    throttled_since = now if throttled_since is None else throttled_since
                    if now - throttled_since >= self.max_throttled:
                        raise RemoteError(
                            f"{_shown(url)}: still rate limited (HTTP 429) after "
                            f"{now - throttled_since:.0f}s of waiting; try again later or lower "
                            f"the pace (--rps)")
                    in_a_row += 1
                    pause = retry_after if retry_after is not None else self._backoff(in_a_row)
                    self._count("throttled")
                    self._count("retries")
                    if self.pace.on_throttled(sent_at, pause) and self.on_retry:
                        self.on_retry(f"{_shown(url)}: HTTP 429 (rate limited): every request "
                                      f"waits {pause:.1f}s; pace now {self.pace.describe()}")
                    continue  # the shared pace holds this worker (and every other) for the pause
                throttled_since, in_a_row = None, 0
                self.pace.on_answer()
                fatal = self._fatal(resp, url)
                if fatal is not None and stream and fatal.status not in (401, 403):
                    return resp, None  # a missing media file is the caller's per-item failure
                if fatal is not None:
                    resp.close()
                    raise fatal
                if resp.status_code in RETRY_STATUSES or resp.status_code >= 500:
                    last = f"HTTP {resp.status_code} {resp.reason}"
                    resp.close()
                else:
                    if not stream:
                        _ = resp.content  # read it all now, so a cut-off body is retried here
                    if not parse_json:
                        return resp, None
                    try:
                        return resp, loads(resp.content)
                    except ValueError:
                        last = f"invalid JSON ({len(resp.content)} bytes)"
            except requests.Timeout:
                last = f"timed out after {self.timeout:g}s"
            except requests.exceptions.ChunkedEncodingError as exc:
                last = f"answer cut off ({type(exc).__name__})"
            except requests.ConnectionError as exc:
                last = _connection_reason(exc)
            tries += 1
            if tries >= self.max_tries:
                raise RemoteError(f"{_shown(url)}: gave up after {self.max_tries} tries: {last}")
            delay = self._backoff(tries)
            self._count("retries")
            if self.on_retry:
                self.on_retry(f"{_shown(url)}: {last}; retry {tries}/{self.max_tries - 1} "
                              f"in {delay:.1f}s")
            time.sleep(delay)

    # -- public ------------------------------------------------------------------------------
    def request(self, url_or_path: str, params: dict[str, Any] | None = None, stream: bool = False,
                throttle: bool | None = None) -> requests.Response:
        """GET with auth, UA, the shared pace (every request; the API pace too for API calls:
        `stream=True` media skips it unless `throttle=True`) and retries. Raises RemoteError with one line when it cannot succeed
        (for `stream=True`, a 404/410/other 4xx comes back as the response: only 401/403 and
        giving up raise, so a downloader can mark that one file failed and go on)."""
        return self._fetch(url_or_path, params, stream, parse_json=False, throttle=throttle)[0]

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET and decode JSON; a truncated or invalid body is retried like a 5xx."""
        return self._fetch(path, params, stream=False, parse_json=True, throttle=None)[1]

    def posts(self, tags: str = "", limit: int = 200, page: str | int = 1) -> list[dict[str, Any]]:
        data = self.get_json("/posts.json", {"tags": tags, "limit": limit, "page": page})
        if not isinstance(data, list):
            raise RemoteError(f"{self.base_url}/posts.json: expected a list of posts, got "
                              f"{type(data).__name__}")
        return data

    def tags(self, names: Iterable[str], batch: int = TAG_BATCH) -> list[dict[str, Any]]:
        """Tag objects for `names`, `batch` names per request (`search[name_comma]`)."""
        names = list(dict.fromkeys(n for n in names if n and "," not in n))
        out: list[dict[str, Any]] = []
        for i in range(0, len(names), batch):
            chunk = names[i:i + batch]
            data = self.get_json("/tags.json", {"search[name_comma]": ",".join(chunk),
                                                "limit": min(1000, len(chunk)),
                                                "only": "id,name,category,post_count,is_deprecated"})
            out.extend(d for d in data if isinstance(d, dict) and d.get("name"))
        return out

    def wiki_page(self, title: str) -> dict[str, Any] | None:
        """The wiki page titled `title` (a tag name), or None when there is none."""
        data = self.get_json("/wiki_pages.json", {"search[title]": title, "limit": 1})
        for page in data if isinstance(data, list) else []:
            if isinstance(page, dict) and page.get("title") == title:
                return page
        return None

    def describe(self, path: str, params: dict[str, Any]) -> str:
        """A request for messages and logs (never with credentials)."""
        safe = {k: v for k, v in params.items() if k not in ("login", "api_key")}
        return f"{self.url(path)}?{urlencode(safe)}"

    def close(self) -> None:
        self.session.close()


def _retry_after(header: str | None) -> float | None:
    """Seconds from a Retry-After header (a number of seconds or an HTTP date), capped."""
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def _connection_reason(exc: Exception) -> str:
    text = str(exc)
    for needle, reason in (("Connection refused", "connection refused"),
                           ("Name or service not known", "host not found"),
                           ("Temporary failure in name resolution", "host not found (no network?)"),
                           ("Connection reset", "connection reset"),
                           ("RemoteDisconnected", "connection closed without an answer"),
                           ("Connection aborted", "connection closed without an answer")):
        if needle in text:
            return reason
    return f"connection failed ({type(exc).__name__})"
