"""Back-pressure (issue 17.1): one shared pace for every worker, 429 = wait and slow down (never a
used-up try), AIMD, the end-of-run retry, and fetch-images against a rate-limited booru."""
from __future__ import annotations

import threading
import time

import pytest

from gaudi_engine.booru.client import DanbooruClient
from gaudi_engine.booru.media import fetch_images
from gaudi_engine.booru.rate_limit import SharedPace
from gaudi_engine.catalogue import open_catalogue
from gaudi_engine.errors import RemoteError
from gaudi_engine.workspace import DanbooruSettings
from tests.booru.test_media import assert_complete, media_rows, store_booru_posts
from tests.fakes.danbooru import Fault, FaultPlan, RateLimit

KEY = "k3y-that-must-never-show-1717"


class FakeClock:
    """Time that only moves when someone sleeps (or the test says so)."""

    def __init__(self):
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def pace_with_clock(**kw) -> tuple[SharedPace, FakeClock]:
    clock = FakeClock()
    return SharedPace(clock=clock, sleep=clock.sleep, **kw), clock


def client_for(url: str, max_tries: int = 2, **kw) -> DanbooruClient:
    settings = DanbooruSettings(base_url=url, requests_per_second=0, username="alice", api_key=KEY,
                                user_agent="GaUDI-test/1.0 (tests)")
    return DanbooruClient(settings, max_tries=max_tries, timeout=5, backoff_base=0.01, **kw)


# -- the shared pace alone (a fake clock: exact and instant) ---------------------------------------
def test_pace_drops_on_429_and_recovers_with_answers():
    pace, clock = pace_with_clock(ceiling=10, increase=0.5, decrease=0.5)
    assert pace.pace == 10
    sent = pace.acquire()
    assert pace.on_throttled(sent, retry_after=1.0) is True
    assert pace.pace == 5 and pace.lowest == 5 and pace.throttled == 1
    for _ in range(4):
        pace.on_answer()
    assert pace.pace == 7  # additive: +0.5 per answer
    for _ in range(100):
        pace.on_answer()
    assert pace.pace == 10  # never past the configured pace


def test_a_429_pauses_every_sender_for_retry_after():
    pace, clock = pace_with_clock(ceiling=0)  # no cap: sends go out at once until a 429
    first = pace.acquire()
    assert clock.slept == []
    pace.on_throttled(first, retry_after=2.5)
    t = pace.acquire()  # any worker's next send waits out the pause
    assert t - first >= 2.5 and sum(clock.slept) >= 2.5


def test_one_decrease_per_round():
    pace, clock = pace_with_clock(ceiling=8, decrease=0.5)
    sends = [pace.acquire() for _ in range(4)]  # four workers' requests in flight
    clock.now += 0.1
    assert pace.on_throttled(sends[0], 0.5) is True
    # the other three were sent at the old pace: their 429s pause but do not lower it again
    assert [pace.on_throttled(s, 0.5) for s in sends[1:]] == [False, False, False]
    assert pace.pace == 4 and pace.decreases == 1 and pace.throttled == 4
    later = pace.acquire()  # sent at the new pace: a 429 now lowers it again
    assert pace.on_throttled(later, 0.5) is True and pace.pace == 2


def test_first_429_without_a_cap_sets_the_pace_from_the_rate_sent():
    pace, clock = pace_with_clock(ceiling=0, decrease=0.5)
    for _ in range(30):  # 30 req/s for a second
        pace.acquire()
        clock.now += 1 / 30
    assert pace.pace is None  # unlimited so far
    pace.on_throttled(clock.now - 0.01, 1.0)
    assert pace.pace == pytest.approx(15, rel=0.1)


def test_the_pace_spaces_sends():
    pace, clock = pace_with_clock(ceiling=4)
    times = [pace.acquire() for _ in range(9)]
    assert times[-1] - times[0] == pytest.approx(2.0)  # 8 intervals at 4/s


# -- the client against the fake server ------------------------------------------------------------
def test_429s_do_not_use_up_tries(booru):
    b = booru(5)
    b.faults = FaultPlan().once("api", Fault(status=429, headers={"Retry-After": "0.02"}), times=5)
    c = client_for(b.url, max_tries=2, max_rps=100)  # each 429 lowers the pace: start high
    assert len(c.posts(limit=5)) == 5  # five 429s and max_tries=2: still no give-up
    assert c.stats["throttled"] == 5 and len(b.requests) == 6


def test_a_429_to_one_worker_pauses_the_others(booru):
    b = booru(5)
    one = f"/posts/{b.post_ids[-1]}.json"
    b.faults = FaultPlan().for_path(one, Fault(status=429, headers={"Retry-After": "0.6"}))
    c = client_for(b.url)
    worker = threading.Thread(target=c.get_json, args=(one,))
    worker.start()
    deadline = time.monotonic() + 5
    while c.stats["throttled"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    t0 = time.monotonic()
    c.posts(limit=1)  # another worker, another path: it waits out the same Retry-After
    assert time.monotonic() - t0 >= 0.45
    worker.join(5)
    assert c.pace.throttled == 1


def test_endless_429s_give_up_with_one_line(booru):
    b = booru(3)
    b.faults = FaultPlan().always("api", Fault(status=429, headers={"Retry-After": "0.05"}))
    c = client_for(b.url, max_throttled=0.4)
    with pytest.raises(RemoteError) as err:
        c.posts()
    msg = str(err.value)
    assert "still rate limited (HTTP 429)" in msg and "\n" not in msg and KEY not in msg


def test_retry_after_as_an_http_date(booru):
    from email.utils import format_datetime
    from datetime import datetime, timedelta, timezone

    b = booru(3)
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=1.5), usegmt=True)
    b.faults = FaultPlan().once("api", Fault(status=429, headers={"Retry-After": when}))
    c = client_for(b.url)
    t0 = time.monotonic()
    c.posts(limit=1)
    assert time.monotonic() - t0 >= 0.4  # an HTTP date rounds down to whole seconds


# -- fetch-images under a rate limit ---------------------------------------------------------------
def test_eight_workers_under_a_rate_limit_fetch_everything(workspace, catalogue, booru):
    limit = RateLimit(40)  # 40 requests in any second; 429 + Retry-After beyond
    b = booru(60, seed=3)
    posts = store_booru_posts(catalogue, b)
    b.faults = limit
    client = client_for(b.url, max_tries=2)  # one 429 counted as a try would fail a file at once
    t0 = time.monotonic()
    s = fetch_images(workspace, catalogue, client, max_workers=8)
    seconds = time.monotonic() - t0
    assert s["failed"] == 0 and s["downloaded"] == 60, s["errors"]
    assert_complete(workspace, catalogue, posts)
    assert limit.limited > 0 and limit.peak <= limit.limit  # the limit was hit, and it held
    assert s["throttled"] == limit.limited == client.stats["throttled"]
    assert client.pace.decreases >= 1 and client.pace.pace is not None  # it slowed down
    # adaptive, not a burst-and-wait loop: far fewer 429s than downloads, and near the limit
    assert limit.limited < 30, (limit.limited, client.pace.describe())
    assert seconds < 60 / 40 * 3, seconds


def test_a_transient_failure_is_retried_at_the_end(workspace, catalogue, booru):
    b = booru(12, seed=5)
    posts = store_booru_posts(catalogue, b)
    flaky = posts[3]
    b.faults = FaultPlan().for_path(flaky["file_url"], Fault(status=503), times=3)
    s = fetch_images(workspace, catalogue, client_for(b.url, max_tries=3), max_workers=4)
    assert s["failed"] == 0 and s["retried"] == 1 and s["recovered"] == 1, s
    assert_complete(workspace, catalogue, posts)
    path = flaky["file_url"].replace(b.url, "")
    assert sum(r["path"] == path for r in b.requests) == 4  # 3 x 503 in the run, then the retry


def test_the_end_of_run_retry_happens_once_and_a_rerun_retries_again(workspace, catalogue, booru):
    b = booru(10, seed=6)
    posts = store_booru_posts(catalogue, b)
    down, gone = posts[2], posts[5]
    b._media.pop(gone["file_url"].replace(b.url, ""))  # a 404 is final: never retried at the end
    b.faults = FaultPlan().for_path(down["file_url"], Fault(status=503), times=100)
    s = fetch_images(workspace, catalogue, client_for(b.url, max_tries=2), max_workers=4)
    assert s["failed"] == 2 and s["retried"] == 1 and s["recovered"] == 0, s
    down_path, gone_path = (p["file_url"].replace(b.url, "") for p in (down, gone))
    assert sum(r["path"] == down_path for r in b.requests) == 4  # 2 tries, then 2 more: once
    assert sum(r["path"] == gone_path for r in b.requests) == 1
    rows = media_rows(catalogue)
    assert rows[down["md5"]][0] == "failed" and "gave up after 2 tries" in rows[down["md5"]][3]
    b.faults = None  # the server recovers: a resumed run retries what this one left failed
    again = fetch_images(workspace, catalogue, client_for(b.url), max_workers=4)
    assert again["downloaded"] == 1 and again["failed"] == 1 and again["skipped"] == 8
    assert media_rows(catalogue)[down["md5"]][0] == "ok"


def test_fetch_images_cli_under_a_rate_limit(workspace, booru, run_gaudi):
    b = booru(40, seed=8, auth=("alice", KEY))
    cat = open_catalogue(workspace.catalogue_path)
    store_booru_posts(cat, b)
    cat.close()
    limit = RateLimit(20)  # 40 files at 20 req/s: the limit is met within the first second
    b.faults = limit
    env = {"DANBOORU_USERNAME": "alice", "DANBOORU_API_KEY": KEY}
    rc, out, err = run_gaudi("-w", workspace.root, "fetch-images", "--max-workers", "8",
                             "--base-url", b.url, env=env, timeout=60)
    assert rc == 0, err
    assert "40 downloaded" in out and " 0 failed" in out, out
    assert limit.limited > 0 and f"asked to slow down {limit.limited} times (429)" in out, out
    assert KEY not in out and KEY not in err
    rc, out, err = run_gaudi("fetch-images", "--help")
    assert "429" in out and "--rps" in out and "Retry-After" in out
    rc, out, err = run_gaudi("-w", workspace.root, "fetch-images", "--rps", "-1")
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "--rps" in err
