"""Test side of the Danbooru fake: fault plans for `LocalBooru` and a generator of realistic posts.

    booru = LocalBooru(); add_fake_posts(booru, 500, seed=1, banned=0.05, deleted=0.05, mp4=0.03)
    booru.faults = FaultPlan(rate=0.1, seed=2)        # ~10% of answers misbehave, seeded
    booru.faults.once("api", Fault(status=429, headers={"Retry-After": "1"}))  # next API answer
    booru.faults.for_path(post["file_url"], Fault(status=503), times=3)  # that file, 3 times
    booru.faults = RateLimit(10, then=FaultPlan(...))  # 10 req/s, 429 + Retry-After beyond
"""
from __future__ import annotations

import io
import random
import struct
import threading
import time
import zlib
from collections import deque

from gaudi_engine.booru.local_booru import Fault, LocalBooru

__all__ = ["Fault", "FaultPlan", "RateLimit", "add_fake_posts", "tiny_png", "GENERAL_TAGS",
           "API_FAULTS", "MEDIA_FAULTS"]

GENERAL_TAGS = [
    "1girl", "solo", "long_hair", "short_hair", "smile", "looking_at_viewer", "blue_eyes",
    "brown_hair", "blonde_hair", "skirt", "dress", "hat", "outdoors", "sky", "cloud", "tree",
    "flower", "holding", "sitting", "standing", "open_mouth", "closed_eyes", "red_eyes",
    "white_background", "simple_background", "school_uniform", "gloves", "twintails", "ribbon",
    "bow", "jacket", "shirt", "thighhighs", "sword", "book", "cat", "water", "night", "star_(sky)",
    "multiple_girls",
]
CHARACTERS = ["hatsune_miku", "hakurei_reimu", "kirisame_marisa", "saber_(fate)"]
COPYRIGHTS = ["vocaloid", "touhou", "fate_(series)", "original"]
ARTISTS = ["artist_a", "artist_b", "artist_c"]
META = ["highres", "absurdres", "commentary"]

# name -> factory; every one is something the real site does now and then
API_FAULTS = {
    "429": lambda: Fault(status=429, headers={"Retry-After": "0"},
                         body=b'{"success":false,"message":"Too many requests"}'),
    "500": lambda: Fault(status=500),
    "502": lambda: Fault(status=502, body=b"<html>502 Bad Gateway</html>"),
    "503": lambda: Fault(status=503, body=b"<html>503 Service Unavailable</html>"),
    "slow": lambda: Fault(delay=0.05),
    "truncated": lambda: Fault(truncate=0.5),              # Content-Length says more than comes
    "bad_json": lambda: Fault(status=200, body=b'[{"id": 12, "md5": "ab'),  # complete but invalid
    "reset": lambda: Fault(drop=True),
}
MEDIA_FAULTS = {
    "500": lambda: Fault(status=500),
    "503": lambda: Fault(status=503),
    "truncated": lambda: Fault(truncate=0.5),
    "slow": lambda: Fault(delay=0.05),
    "reset": lambda: Fault(drop=True),
}


class FaultPlan:
    """Decides, per request, whether to misbehave. Seeded: the same plan gives the same faults
    for the same sequence of requests. One-shot faults queued with `once` come first."""

    def __init__(self, rate: float = 0.0, seed: int = 0, api: list[str] | None = None,
                 media: list[str] | None = None, latency: float = 0.0):
        self.rate = rate
        self.latency = latency  # seconds added to every API answer (a slow but healthy site)
        self._rng = random.Random(seed)
        self._api = [API_FAULTS[k] for k in (api or list(API_FAULTS))]
        self._media = [MEDIA_FAULTS[k] for k in (media or list(MEDIA_FAULTS))]
        self._queued: dict[str, deque[Fault]] = {"api": deque(), "media": deque()}
        self._by_path: dict[str, deque[Fault]] = {}
        self._always: dict[str, Fault | None] = {"api": None, "media": None}
        self._lock = threading.Lock()
        self.injected: list[tuple[str, str, Fault]] = []

    def once(self, kind: str, fault: Fault, times: int = 1) -> "FaultPlan":
        with self._lock:
            self._queued[kind].extend([fault] * times)
        return self

    def for_path(self, path: str, fault: Fault, times: int = 1) -> "FaultPlan":
        """The next `times` requests for this path (a URL or its path) misbehave, before any
        other fault of the plan."""
        from urllib.parse import urlsplit

        with self._lock:
            self._by_path.setdefault(urlsplit(path).path, deque()).extend([fault] * times)
        return self

    def always(self, kind: str, fault: Fault | None) -> "FaultPlan":
        """Every request of this kind misbehaves (e.g. a 503 outage) until reset with None."""
        self._always[kind] = fault
        return self

    def pick(self, kind: str, path: str) -> Fault | None:
        with self._lock:
            fault = None
            if self._by_path.get(path):
                fault = self._by_path[path].popleft()
            elif self._queued[kind]:
                fault = self._queued[kind].popleft()
            elif self._always[kind] is not None:
                fault = self._always[kind]
            elif self.rate and self._rng.random() < self.rate:
                fault = self._rng.choice(self._api if kind == "api" else self._media)()
            if fault is not None:
                self.injected.append((kind, path, fault))
            elif kind == "api" and self.latency:
                fault = Fault(delay=self.latency)
            return fault


class RateLimit:
    """A server that enforces a rate limit, as Danbooru's ingress does: at most `rps` requests in
    any `window` seconds (a sliding window over the requests it served); the others answer 429
    with a Retry-After that says when a slot frees (or `retry_after`, fixed). Requests it lets
    through go on to `then` (another fault plan), so faults and the limit combine.

    `served`, `limited` (429s sent) and `peak` (most requests served in one window) say what it
    did; a test that reads `peak <= limit` knows the limit really held."""

    def __init__(self, rps: float, window: float = 1.0, retry_after: float | None = None,
                 kinds: tuple[str, ...] = ("api", "media"), then=None):
        self.limit = max(1, int(rps * window))
        self.window = window
        self.retry_after = retry_after
        self.kinds = kinds
        self.then = then
        self.served = 0
        self.limited = 0
        self.peak = 0
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    @property
    def injected(self) -> list:
        return self.then.injected if self.then is not None else []

    def pick(self, kind: str, path: str) -> Fault | None:
        if kind in self.kinds:
            with self._lock:
                now = time.monotonic()
                while self._times and self._times[0] <= now - self.window:
                    self._times.popleft()
                if len(self._times) >= self.limit:
                    self.limited += 1
                    wait = (self.retry_after if self.retry_after is not None
                            else self._times[0] + self.window - now)
                    return Fault(status=429, headers={"Retry-After": f"{max(0.0, wait):.2f}"},
                                 body=b'{"success":false,"message":"Too many requests"}')
                self._times.append(now)
                self.served += 1
                self.peak = max(self.peak, len(self._times))
        return self.then.pick(kind, path) if self.then is not None else None


def tiny_png(seed: int, size: tuple[int, int] = (8, 8)) -> bytes:
    """A small valid PNG whose pixels (hence md5) depend on `seed`; written by hand because
    generating hundreds with PIL costs more than the test budget allows."""
    w, h = size
    rng = random.Random(seed)
    rows = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(w * 3)) for _ in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def add_fake_posts(booru: LocalBooru, n: int, seed: int = 0, start_id: int = 1000,
                   banned: float = 0.0, deleted: float = 0.0, mp4: float = 0.0,
                   id_gap: int = 3) -> list[int]:
    """Add `n` realistic posts (ids with gaps, as on the real site) with tiny PNG images; a
    fraction banned (no md5/URLs), deleted, or mp4 (bytes that are not an image). Returns ids."""
    rng = random.Random(seed)
    ids = []
    post_id = start_id
    for i in range(n):
        post_id += rng.randint(1, id_gap)
        general = rng.sample(GENERAL_TAGS, rng.randint(3, 12))
        is_mp4 = rng.random() < mp4
        data = (b"\x00\x00\x00\x18ftypmp42" + rng.randbytes(64)) if is_mp4 else tiny_png(seed * 100003 + i)
        booru.add_image_post(
            post_id, data, "mp4" if is_mp4 else "png", general, rating=rng.choice("gsqe"),
            character=rng.sample(CHARACTERS, rng.randint(0, 1)),
            copyright=rng.sample(COPYRIGHTS, 1), artist=rng.sample(ARTISTS, 1),
            meta=rng.sample(META, rng.randint(0, 2)), is_deleted=rng.random() < deleted,
            is_banned=rng.random() < banned, source=f"https://example.com/{post_id}",
            size=(640, 360) if is_mp4 else (8, 8))
        ids.append(post_id)
    return ids


def png_bytes_of(image) -> bytes:
    """PNG bytes of a PIL image (for tests that build their own pictures)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
