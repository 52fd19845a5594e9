"""Every error a user can meet in `gaudi sync*` ends as ONE line on stderr, no traceback, exit != 0."""
from __future__ import annotations

import socket

import pytest

from gaudi_engine.catalogue import open_catalogue
from tests.fakes.danbooru import Fault, FaultPlan

KEY = "k3y-that-must-never-show-0000"
FAST = ["--rps", "0", "--backoff", "0.01"]


def assert_one_line_error(rc, out, err, *needles):
    assert rc != 0
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("gaudi ") and "error" in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert KEY not in err and KEY not in out


def test_bad_credentials_401(booru, workspace, run_gaudi):
    b = booru(5, auth=("alice", "right-key"))
    r = run_gaudi("-w", workspace.root, "sync", "--base-url", b.url, *FAST,
                  env={"DANBOORU_USERNAME": "alice", "DANBOORU_API_KEY": KEY})
    assert_one_line_error(*r, "401", "DANBOORU_API_KEY")


def test_cloudflare_403(booru, workspace, run_gaudi):
    b = booru(5, block_generic_user_agents=True)
    r = run_gaudi("-w", workspace.root, "sync", "--base-url", b.url, *FAST,
                  env={"DANBOORU_USER_AGENT": "python-requests/2.32"})
    assert_one_line_error(*r, "403", "Cloudflare", "DANBOORU_USER_AGENT")


def test_410_gone(booru, workspace, run_gaudi):
    b = booru(5)
    b.faults = FaultPlan().always("api", Fault(status=410, body=(
        b'{"success":false,"error":"PaginationExtension::PaginationError",'
        b'"message":"You cannot go beyond page 1000."}')))
    r = run_gaudi("-w", workspace.root, "sync", "--base-url", b.url, *FAST)
    assert_one_line_error(*r, "410", "You cannot go beyond page 1000")


def test_422_too_many_tags(booru, workspace, run_gaudi):
    b = booru(5)
    r = run_gaudi("-w", workspace.root, "sync", "--base-url", b.url, "--tags", "1girl solo smile", *FAST)
    assert_one_line_error(*r, "422", "more than 2 tags")


def test_gives_up_after_n_tries(booru, workspace, run_gaudi):
    b = booru(5)
    b.faults = FaultPlan().always("api", Fault(status=502, body=b"bad gateway"))
    r = run_gaudi("-w", workspace.root, "sync", "--base-url", b.url, "--max-tries", "3", *FAST)
    assert_one_line_error(*r, "gave up after 3 tries", "502")
    assert len(b.requests) == 3


def test_no_network_connection_refused(workspace, run_gaudi):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for cmd in ("sync", "sync-wiki"):
        r = run_gaudi("-w", workspace.root, cmd, "--base-url", f"http://127.0.0.1:{port}",
                      "--max-tries", "2", *FAST)
        if cmd == "sync":
            assert_one_line_error(*r, "connection refused")
        else:  # nothing to ask for in an empty catalogue: succeeds without touching the network
            assert r[0] == 0, r


def test_locked_catalogue(booru, workspace, run_gaudi):
    b = booru(5)
    cat = open_catalogue(workspace.catalogue_path)
    try:
        for args in (["sync", "--base-url", b.url, *FAST], ["descriptions", "list"],
                     ["sync-tags", "--base-url", b.url]):
            r = run_gaudi("-w", workspace.root, *args)
            assert_one_line_error(*r, "in use by another process")
    finally:
        cat.close()
    assert len(b.requests) <= 1  # nothing synced into a catalogue it could not open


@pytest.mark.parametrize("args, needle", [
    (["sync", "--page-size", "500"], "--page-size must be between 1 and 200"),
    (["sync", "--base-url", "danbooru.donmai.us"], "--base-url must start with http"),
    (["sync", "--max-tries", "0"], "--max-tries must be at least 1"),
    (["descriptions", "import", "/nonexistent/file.json"], "no such file"),
])
def test_bad_arguments(workspace, run_gaudi, args, needle):
    r = run_gaudi("-w", workspace.root, *args)
    assert_one_line_error(*r, needle)
