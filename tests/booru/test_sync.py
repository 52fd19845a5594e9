"""Post/tag/wiki sync: exact catalogue after faults, kills and reruns; resume; limits; queries."""
from __future__ import annotations

import json

import pytest

from gaudi_engine.booru.client import DanbooruClient
from gaudi_engine.booru.sync import build_query, sync_posts, sync_tags, sync_wiki
from gaudi_engine.catalogue import open_catalogue
from gaudi_engine.errors import GaudiError, RemoteError
from gaudi_engine.workspace import DanbooruSettings
from tests.conftest import run_gaudi_cmd
from tests.fakes.danbooru import Fault, FaultPlan, add_fake_posts
from tests.killing import progress_done, sigkill_when


def client_for(b, max_tries=8) -> DanbooruClient:
    return DanbooruClient(DanbooruSettings(base_url=b.url, requests_per_second=0),
                          max_tries=max_tries, timeout=5, backoff_base=0.005)


def assert_catalogue_matches(cat, b, ids=None):
    """The catalogue holds exactly the booru's posts (each once) with their general tags."""
    ids = set(b.post_ids if ids is None else ids)
    got = [r[0] for r in cat.fetchall("SELECT id FROM posts ORDER BY id")]
    assert len(got) == len(set(got)) and set(got) == ids
    pairs = set(cat.fetchall("SELECT post_id, tag FROM post_tags"))
    want = {(i, t) for i in ids for t in b.post(i)["tag_string_general"].split()}
    assert pairs == want
    assert cat.scalar("SELECT count(*) FROM post_tags") == len(want)


def test_sync_with_faults_is_exact_and_idempotent(booru, workspace, catalogue):
    b = booru(320, seed=5, faults=0.1, banned=0.05, deleted=0.05, mp4=0.03)
    s = sync_posts(workspace, catalogue, client_for(b), page_size=50)
    assert s["done"] and s["stored"] == 320 and s["retries"] > 0
    assert len(b.faults.injected) > 0
    assert_catalogue_matches(catalogue, b)
    # banned: kept, no md5/URLs; deleted: kept and flagged; raw JSON holds every field
    banned = {i for i in b.post_ids if b.post(i)["is_banned"]}
    deleted = {i for i in b.post_ids if b.post(i)["is_deleted"]}
    assert banned and deleted
    assert {r[0] for r in catalogue.fetchall("SELECT id FROM posts WHERE md5 IS NULL")} == banned
    assert {r[0] for r in catalogue.fetchall("SELECT id FROM posts WHERE is_banned")} == banned
    assert catalogue.scalar("SELECT count(*) FROM posts WHERE md5 IS NULL AND file_url IS NOT NULL") == 0
    assert {r[0] for r in catalogue.fetchall("SELECT id FROM posts WHERE is_deleted")} == deleted
    pid = b.post_ids[7]
    raw = json.loads(catalogue.scalar("SELECT raw FROM posts WHERE id = ?", [pid]))
    assert raw["id"] == pid and raw["tag_string_artist"] == b.post(pid)["tag_string_artist"]
    assert raw["file_url"].startswith(b.url + "/data/") if "file_url" in raw else pid in banned
    # a rerun changes nothing and asks for newer posts only
    n_req = len(b.requests)
    s2 = sync_posts(workspace, catalogue, client_for(b), page_size=50)
    assert s2["stored"] == 0
    pages = [r["params"].get("page") for r in b.requests[n_req:] if r["path"] == "/posts.json"]
    assert pages[-1] == f"a{max(b.post_ids)}"
    assert_catalogue_matches(catalogue, b)


def test_later_sync_fetches_only_newer_posts(booru, workspace, catalogue):
    b = booru(50, seed=6)
    sync_posts(workspace, catalogue, client_for(b), page_size=20)
    new = add_fake_posts(b, 45, seed=7, start_id=max(b.post_ids) + 10)
    n_req = len(b.requests)
    s = sync_posts(workspace, catalogue, client_for(b), page_size=20)
    assert s["stored"] == 45
    pages = [r["params"]["page"] for r in b.requests[n_req:] if r["path"] == "/posts.json"]
    assert all(p.startswith("a") for p in pages) and len(pages) == 4  # 20 + 20 + 5 + empty
    assert_catalogue_matches(catalogue, b)
    assert max(new) == catalogue.scalar("SELECT highest_id FROM sync_state")


def test_limit_counts_posts_stored_in_this_run(booru, workspace, catalogue):
    b = booru(130, seed=8)
    for expected in (45, 45, 40, 0):
        s = sync_posts(workspace, catalogue, client_for(b), limit=45, page_size=20)
        assert s["stored"] == expected
    assert_catalogue_matches(catalogue, b)
    # the first 45 stored were the newest
    assert catalogue.scalar("SELECT count(*) FROM posts") == 130


def test_resume_after_a_failure_midway(booru, workspace, catalogue):
    b = booru(200, seed=9)
    plan = FaultPlan()
    b.faults = plan
    calls = {"n": 0}
    real_pick = plan.pick

    def pick(kind, path):  # the site goes down after 3 pages
        calls["n"] += 1
        return Fault(status=503) if calls["n"] > 3 else real_pick(kind, path)

    plan.pick = pick
    with pytest.raises(RemoteError, match="gave up after 3 tries"):
        sync_posts(workspace, catalogue, client_for(b, max_tries=3), page_size=30)
    assert catalogue.scalar("SELECT count(*) FROM posts") == 90
    assert catalogue.scalar("SELECT lowest_id FROM sync_state") == sorted(b.post_ids, reverse=True)[89]
    plan.pick = real_pick
    s = sync_posts(workspace, catalogue, client_for(b), page_size=30)
    assert s["stored"] == 110
    assert_catalogue_matches(catalogue, b)


def test_rating_and_tag_queries_have_their_own_state(booru, workspace, catalogue):
    b = booru(150, seed=10)
    sync_posts(workspace, catalogue, client_for(b), rating="sfw", page_size=40)
    sfw = {i for i in b.post_ids if b.post(i)["rating"] in "gs"}
    assert {r[0] for r in catalogue.fetchall("SELECT id FROM posts")} == sfw
    sync_posts(workspace, catalogue, client_for(b), tags="1girl -solo", rating="e", page_size=40)
    extra = {i for i in b.post_ids if b.post(i)["rating"] == "e"
             and "1girl" in b.post(i)["tag_string"].split() and "solo" not in b.post(i)["tag_string"].split()}
    assert_catalogue_matches(catalogue, b, sfw | extra)
    assert catalogue.scalar("SELECT count(*) FROM sync_state") == 2
    with pytest.raises(GaudiError, match="unknown rating"):
        build_query("", "safe")


def test_sync_tags_and_wiki(booru, workspace, catalogue):
    b = booru(60, seed=11)
    b.add_wiki("smile", "h4. Smile\n\nA [[facial expression]]. The corners of the mouth go up.\n\n* [[grin]]")
    b.add_wiki("hat", "Headwear.", is_deleted=True)
    c = client_for(b)
    sync_posts(workspace, catalogue, c, page_size=200)
    s = sync_tags(catalogue, c, batch=7)
    n = catalogue.scalar("SELECT count(DISTINCT tag) FROM post_tags")
    assert s == {"requested": n, "stored": n, "missing": 0}
    row = catalogue.fetchone("SELECT category, post_count FROM tags WHERE name = 'smile'")
    assert row == (0, sum("smile" in b.post(i)["tag_string_general"].split() for i in b.post_ids))
    w = sync_wiki(catalogue, c)
    assert w["requested"] == n and w["found"] == 1
    plain = catalogue.scalar("SELECT plain FROM wiki_pages WHERE title = 'smile'")
    assert plain.startswith("Smile\n\nA facial expression. The corners")
    assert catalogue.scalar("SELECT is_deleted FROM wiki_pages WHERE title = 'hat'") is True
    n_req = len(b.requests)
    assert sync_wiki(catalogue, c)["requested"] == 0 and len(b.requests) == n_req  # nothing to ask


def test_sigkill_halfway_then_rerun_gives_exact_catalogue(booru, workspace, tmp_path):
    b = booru(540, seed=12, banned=0.04, deleted=0.04, mp4=0.03)
    b.faults = FaultPlan(rate=0.1, seed=13, latency=0.06)
    args = ["--workspace", workspace.root, "sync", "--base-url", b.url, "--page-size", "20",
            "--rps", "0", "--backoff", "0.01", "--max-tries", "10"]
    jsonl = tmp_path / "progress.jsonl"
    sigkill_when([*args, "--progress-jsonl", jsonl], lambda: progress_done(jsonl, "sync") > 200,
                 log=tmp_path / "killed.log", timeout=60)
    cat = open_catalogue(workspace.catalogue_path)
    stored = cat.scalar("SELECT count(*) FROM posts")
    assert 200 < stored < 540
    assert cat.scalar("SELECT posts_seen FROM sync_state") == stored  # state and posts agree
    cat.close()
    b.faults.latency = 0
    rc, out, err = run_gaudi_cmd(*args, timeout=60)
    assert rc == 0, err
    assert f"stored {540 - stored} posts" in out
    cat = open_catalogue(workspace.catalogue_path)
    try:
        assert_catalogue_matches(cat, b)
        assert cat.scalar("SELECT done FROM sync_state") is True
    finally:
        cat.close()


def test_a_booru_that_ignores_paging_is_an_error_not_a_loop(booru, workspace, catalogue):
    b = booru(30, seed=14)
    first_page = b.search_posts("", 10, "1")
    b.search_posts = lambda tags, limit, page: first_page  # answers page 1 whatever is asked
    with pytest.raises(RemoteError, match="ignored page=b"):
        sync_posts(workspace, catalogue, client_for(b), page_size=10)
    assert catalogue.scalar("SELECT count(*) FROM posts") == 10
    b.search_posts = lambda tags, limit, page: [{"no": "id"}]
    catalogue.execute("DELETE FROM sync_state")
    with pytest.raises(RemoteError, match="not a post"):
        sync_posts(workspace, catalogue, client_for(b), page_size=10)
