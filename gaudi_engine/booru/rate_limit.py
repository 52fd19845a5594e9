"""Rate limiting for a Danbooru client: a fixed token bucket and the shared, adaptive pace.

One `SharedPace` belongs to one client and every thread that uses the client (API pages and
media downloads alike) takes its tokens from it, because the server limits the client, not each
worker: eight workers that each wait 1 s after their own 429 keep hitting the limit together.

- API requests keep the configured politeness pace (`api_rate`, DESIGN §5: 2 req/s by default).
- Every request, API or media, also takes a token at the *shared pace*, which adapts to the
  server the way TCP adapts its window (AIMD):
  * a 429 pauses every worker until its Retry-After has passed, and multiplies the pace by
    `decrease`, once per round: a 429 to a request sent before the last decrease was sent at the
    old pace and does not lower it again;
  * each answered request adds `increase` req/s, up to `ceiling` (the configured pace for all
    requests together; 0 = none). Per answer, not per second, so recovering from a decrease
    takes about the same time at 2 req/s as at 200. `decrease` 0.7 (as TCP CUBIC) rather than
    the classic 0.5: BENCHMARKS.md (session 9) has both against a 10 req/s limit.
  Without a ceiling the shared pace starts unlimited (media downloads are then bounded by the
  worker pool alone, as before); the first 429 sets it from the rate the client was sending at.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

WINDOW = 1.0  # seconds of recent sends used to measure the rate the client was sending at


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


class SharedPace:
    """The one rate limiter of a client (see the module docstring). Thread-safe."""

    def __init__(self, api_rate: float = 0.0, ceiling: float = 0.0, increase: float = 0.1,
                 decrease: float = 0.7, floor: float = 0.5,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if not 0 < decrease < 1:
            raise ValueError("decrease must be between 0 and 1")
        self.api = TokenBucket(api_rate)
        self.ceiling = float(ceiling) if ceiling and ceiling > 0 else None
        self.increase = float(increase)
        self.decrease = float(decrease)
        self.floor = min(float(floor), self.ceiling or float(floor))
        self.pace: float | None = self.ceiling  # req/s for all requests together; None = unlimited
        self.throttled = 0       # 429s seen
        self.decreases = 0       # times the pace was lowered
        self.lowest: float | None = None  # the lowest pace of the run (for summaries)
        self._clock, self._sleep = clock, sleep
        self._tokens = 1.0
        self._stamp = clock()
        self._paused_until = float("-inf")
        self._resumed_at = float("-inf")   # when the last pause ended
        self._last_decrease = float("-inf")
        self._first_send: float | None = None
        self._sends: deque[float] = deque()
        self._queue = threading.Lock()     # waiters take turns, so tokens go out in order
        self._state = threading.Lock()     # guards the numbers; never held while sleeping

    # -- the workers' side -------------------------------------------------------------------
    def acquire(self, api: bool = False) -> float:
        """Wait for a token (and for any pause); returns the send time to hand back with the
        answer's `on_throttled`/`on_answer`."""
        if api:
            self.api.acquire()
        with self._queue:
            while True:
                with self._state:
                    now = self._clock()
                    wait = self._paused_until - now
                    if wait <= 0 and self.pace is not None:
                        self._refill(now)
                        if self._tokens < 1.0:
                            wait = (1.0 - self._tokens) / self.pace
                        else:
                            self._tokens -= 1.0
                    if wait <= 0:
                        self._note_send(now)
                        return now
                # a 429 may pause everyone while we sleep: the loop looks again before sending
                self._sleep(wait)

    def on_answer(self) -> None:
        """An answer that was not a 429: additive increase."""
        with self._state:
            if self.pace is not None:
                self._refill(self._clock())
                self.pace = min(self.ceiling or float("inf"), self.pace + self.increase)

    def on_throttled(self, sent_at: float, retry_after: float) -> bool:
        """A 429 to a request sent at `sent_at`: every worker waits `retry_after` seconds, and the
        pace drops (multiplicative decrease) unless it already did for this round. Returns
        whether it dropped."""
        with self._state:
            now = self._clock()
            self.throttled += 1
            if now >= self._paused_until:
                self._resumed_at = max(self._resumed_at, self._paused_until)
            self._paused_until = max(self._paused_until, now + max(0.0, retry_after))
            if sent_at < self._last_decrease:
                return False
            sent, span = self._recent_sends(now)
            if self.pace is None:  # unlimited until now: start from the rate we were sending at
                base = sent / max(span, 0.25 * WINDOW)
            elif sent >= 5 and span >= 0.5 * WINDOW:
                # after a long quiet stretch the pace may have grown far past what was sent
                base = min(self.pace, sent / span)
            else:
                base = self.pace
            self._refill(now)
            self.pace = max(self.floor, base * self.decrease)
            self._tokens = min(self._tokens, 0.0)  # the first send after the pause waits its turn
            self.lowest = self.pace if self.lowest is None else min(self.lowest, self.pace)
            self._last_decrease = now
            self.decreases += 1
            return True

    def describe(self) -> str:
        return "unlimited" if self.pace is None else f"{self.pace:.1f} req/s"

    # -- inside ------------------------------------------------------------------------------
    def _refill(self, now: float) -> None:
        if self.pace is not None:
            self._tokens = min(1.0, self._tokens + (now - self._stamp) * self.pace)
        self._stamp = now

    def _note_send(self, now: float) -> None:
        if self._first_send is None:
            self._first_send = now
        self._sends.append(now)
        while self._sends and self._sends[0] <= now - WINDOW:
            self._sends.popleft()

    def _recent_sends(self, now: float) -> tuple[int, float]:
        """(requests sent, seconds) over the last WINDOW, or since the run began or the last
        pause ended when that is shorter: the rate the client was really sending at."""
        start = max(now - WINDOW, self._first_send if self._first_send is not None else now,
                    self._resumed_at)
        return sum(1 for t in self._sends if t >= start), now - start
