"""A polite Danbooru client (DESIGN §5).

- HTTP Basic auth `login:api_key` from DanbooruSettings; the configured User-Agent on every
  request (a generic python-requests UA gets a Cloudflare challenge).
- A token bucket keeps API requests at or under `requests_per_second` (default 2/s). Media
  downloads (stream=True) are not throttled by it: the downloader bounds them with its pool.
- Retries with exponential backoff and jitter on 429 (Retry-After honoured), 5xx, timeouts,
  connection resets and truncated or invalid JSON; gives up after `max_tries` with one line.
- 401/403/410/422 become one-line `RemoteError`s; 422 carries Danbooru's own message.
- The API key never appears in messages: auth travels in a header, URLs shown are stripped.
"""
from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, Iterable
from urllib.parse import urlencode, urlsplit

import requests

from ..errors import RemoteError
from ..workspace import DanbooruSettings
from .posts import loads

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 524})
MAX_RETRY_AFTER = 120.0
TAG_BATCH = 100  # names per /tags.json request: keeps the URL well under common limits


class TokenBucket:
    """At most `rate` acquisitions per second on average, bursts of at most `burst`."""

    def __init__(self, rate: float, burst: float = 1.0):
        self.rate = float(rate)
        self.capacity = max(1.0, float(burst))
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if self.rate <= 0:  # 0 or negative: unlimited
            return
        with self._lock:  # callers queue here, so the rate holds across threads
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens < 1.0:
                wait = (1.0 - self._tokens) / self.rate
                time.sleep(wait)
                self._stamp = time.monotonic()
                self._tokens = 0.0
            else:
                self._tokens -= 1.0


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
                 on_retry: Callable[[str], None] | None = None):
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.max_tries = max(1, int(max_tries))
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.on_retry = on_retry
        self.bucket = TokenBucket(settings.requests_per_second)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = settings.user_agent
        self.session.headers["Accept"] = "application/json"
        if settings.username and settings.api_key:
            self.session.auth = (settings.username, settings.api_key)
        self.stats = {"requests": 0, "retries": 0}
        self._rng = random.Random()

    # -- plumbing ----------------------------------------------------------------------------
    def url(self, url_or_path: str) -> str:
        if url_or_path.startswith(("http://", "https://")):
            return url_or_path
        return f"{self.base_url}/{url_or_path.lstrip('/')}"

    def _backoff(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(MAX_RETRY_AFTER, max(0.0, retry_after))
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
        throttle = (not stream) if throttle is None else throttle
        last = "no answer"
        for attempt in range(1, self.max_tries + 1):
            if throttle:
                self.bucket.acquire()
            self.stats["requests"] += 1
            retry_after = None
            try:
                resp = self.session.get(url, params=params, timeout=self.timeout, stream=stream)
                fatal = self._fatal(resp, url)
                if fatal is not None and stream and fatal.status not in (401, 403):
                    return resp, None  # a missing media file is the caller's per-item failure
                if fatal is not None:
                    resp.close()
                    raise fatal
                if resp.status_code in RETRY_STATUSES or resp.status_code >= 500:
                    last = f"HTTP {resp.status_code} {resp.reason}"
                    header = resp.headers.get("Retry-After")
                    if resp.status_code == 429 and header:
                        try:
                            retry_after = float(header)
                        except ValueError:
                            retry_after = None
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
            if attempt < self.max_tries:
                delay = self._backoff(attempt, retry_after)
                self.stats["retries"] += 1
                if self.on_retry:
                    self.on_retry(f"{_shown(url)}: {last}; retry {attempt}/{self.max_tries - 1} "
                                  f"in {delay:.1f}s")
                time.sleep(delay)
        raise RemoteError(f"{_shown(url)}: gave up after {self.max_tries} tries: {last}")

    # -- public ------------------------------------------------------------------------------
    def request(self, url_or_path: str, params: dict[str, Any] | None = None, stream: bool = False,
                throttle: bool | None = None) -> requests.Response:
        """GET with auth, UA, rate limit (API calls; `stream=True` media is not throttled unless
        `throttle=True`) and retries. Raises RemoteError with one line when it cannot succeed
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
