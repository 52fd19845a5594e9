"""DanbooruClient against LocalBooru with injected faults: auth, UA, rate, retries, one-line errors."""
from __future__ import annotations

import socket
import time

import pytest

from gaudi_engine.booru.client import DanbooruClient, TokenBucket
from gaudi_engine.errors import RemoteError
from gaudi_engine.workspace import DanbooruSettings
from tests.fakes.danbooru import API_FAULTS, Fault, FaultPlan

KEY = "s3cr3t-api-key-0123456789"


def client_for(b, rps=0.0, max_tries=4, timeout=5.0, user="alice", key=KEY, **kw) -> DanbooruClient:
    settings = DanbooruSettings(base_url=b.url, username=user, api_key=key, requests_per_second=rps,
                                user_agent="GaUDI-test/1.0 (tests)")
    return DanbooruClient(settings, max_tries=max_tries, timeout=timeout, backoff_base=0.01, **kw)


def test_auth_and_user_agent_on_every_request(booru):
    b = booru(30, auth=("alice", KEY))
    c = client_for(b)
    assert [p["id"] for p in c.posts(limit=5)] == b.post_ids[:5]
    first = c.posts(limit=1)[0]
    assert c.request(first["file_url"], stream=True).content == b.media_bytes(first["file_url"])
    c.tags(["1girl", "solo"])
    c.wiki_page("1girl")
    assert len(b.requests) == 5
    assert all(r["user_agent"] == "GaUDI-test/1.0 (tests)" and r["authorised"] for r in b.requests)


def test_bad_key_is_one_line_401_without_the_key(booru):
    b = booru(3, auth=("alice", KEY))
    with pytest.raises(RemoteError) as err:
        client_for(b, key="wrong-key-999999").posts()
    msg = str(err.value)
    assert "401" in msg and "DANBOORU_API_KEY" in msg and "\n" not in msg
    assert "wrong-key" not in msg and KEY not in msg
    assert len(b.requests) == 1  # not retried: retrying cannot fix a bad key


def test_generic_user_agent_gets_403_mentioning_cloudflare(booru):
    b = booru(3, block_generic_user_agents=True)
    settings = DanbooruSettings(base_url=b.url, requests_per_second=0, user_agent="python-requests/2.32")
    with pytest.raises(RemoteError, match=r"403.*Cloudflare.*DANBOORU_USER_AGENT"):
        DanbooruClient(settings, backoff_base=0.01).posts()
    assert client_for(b).posts(limit=1)  # a descriptive UA passes


def test_410_and_422_carry_danbooru_messages(booru):
    b = booru(5)
    c = client_for(b)
    with pytest.raises(RemoteError, match=r"410.*page=b<id>"):
        c.posts(page=1001)
    with pytest.raises(RemoteError, match=r"422.*more than 2 tags"):
        c.posts(tags="1girl solo smile")
    assert len(c.posts(tags="1girl solo rating:g,s -status:deleted id:>0")) >= 0  # metatags are free


def test_429_honours_retry_after(booru):
    b = booru(5)
    b.faults = FaultPlan().once("api", Fault(status=429, headers={"Retry-After": "0.4"}))
    c = client_for(b)
    t0 = time.monotonic()
    assert len(c.posts(limit=5)) == 5
    assert time.monotonic() - t0 >= 0.4  # the backoff base is 0.01 s: the wait came from Retry-After
    assert c.stats == {"requests": 2, "retries": 1, "throttled": 1}


@pytest.mark.parametrize("fault", sorted(API_FAULTS))
def test_each_transient_fault_is_retried(booru, fault):
    b = booru(40, seed=4)
    clean = client_for(b).posts(limit=20)
    b.faults = FaultPlan().once("api", API_FAULTS[fault](), times=2)
    c = client_for(b)
    assert c.posts(limit=20) == clean
    assert c.stats["retries"] == (0 if fault == "slow" else 2)


def test_timeout_is_retried(booru):
    b = booru(5)
    b.faults = FaultPlan().once("api", Fault(delay=0.6))
    c = client_for(b, timeout=0.2)
    assert len(c.posts(limit=5)) == 5 and c.stats["retries"] == 1


def test_gives_up_after_n_tries_with_last_error(booru):
    b = booru(5)
    b.faults = FaultPlan().always("api", Fault(status=503, body=b"down"))
    logs = []
    c = client_for(b, max_tries=3, on_retry=logs.append)
    with pytest.raises(RemoteError, match=r"gave up after 3 tries: HTTP 503"):
        c.posts()
    assert len(b.requests) == 3 and len(logs) == 2
    assert all(KEY not in line for line in logs)


def test_connection_refused_gives_up_with_reason():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = DanbooruClient(DanbooruSettings(base_url=f"http://127.0.0.1:{port}", requests_per_second=0),
                       max_tries=2, backoff_base=0.01)
    with pytest.raises(RemoteError, match=r"gave up after 2 tries: connection refused"):
        c.posts()


def test_rate_limit_spaces_api_requests_but_not_media(booru):
    b = booru(5)
    c = client_for(b, rps=20)
    t0 = time.monotonic()
    for _ in range(11):
        c.posts(limit=1)
    assert time.monotonic() - t0 >= 0.45  # 10 intervals of 50 ms after the first token
    url = c.posts(limit=1)[0]["file_url"]
    t0 = time.monotonic()
    for _ in range(10):
        c.request(url, stream=True).close()
    assert time.monotonic() - t0 < 0.45


def test_token_bucket_zero_is_unlimited():
    bucket = TokenBucket(0)
    t0 = time.monotonic()
    for _ in range(1000):
        bucket.acquire()
    assert time.monotonic() - t0 < 0.1


def test_tags_batches_and_wiki(booru):
    b = booru(60, seed=2)
    b.add_wiki("smile", "A [[smile|smiling]] face.")
    c = client_for(b)
    names = [f"tag_{i}" for i in range(250)] + ["1girl", "solo"]
    found = c.tags(names, batch=100)
    assert {t["name"] for t in found} == {"1girl", "solo"}
    tag_requests = [r for r in b.requests if r["path"] == "/tags.json"]
    assert len(tag_requests) == 3
    assert all(len(r["params"]["search[name_comma]"].split(",")) <= 100 for r in tag_requests)
    assert c.wiki_page("smile")["body"] == "A [[smile|smiling]] face."
    assert c.wiki_page("nope") is None


def test_media_404_is_returned_not_raised(booru):
    b = booru(3)
    c = client_for(b)
    resp = c.request(b.url + "/data/original/00/00/missing.png", stream=True)
    assert resp.status_code == 404
    with pytest.raises(RemoteError, match="404"):
        c.request(b.url + "/nope.json")
