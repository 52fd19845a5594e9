"""fetch-images: verified downloads under faults, statuses, resume after SIGKILL, variants."""
from __future__ import annotations

import hashlib
import io
import json
import time

import pytest

from gaudi_engine.booru import media as media_mod
from gaudi_engine.booru.client import DanbooruClient
from gaudi_engine.booru.local_booru import Fault, LocalBooru
from gaudi_engine.booru.media import fetch_images
from gaudi_engine.booru.posts import parse_posts
from gaudi_engine.catalogue import open_catalogue
from gaudi_engine.catalogue.queries import counts
from gaudi_engine.catalogue.store import upsert_posts
from gaudi_engine.errors import GaudiError
from gaudi_engine.workspace import DanbooruSettings
from tests.fakes.danbooru import FaultPlan, tiny_png
from tests.killing import sigkill_when


def store_booru_posts(cat, booru: LocalBooru) -> list[dict]:
    """Put every post of `booru` into the catalogue the way a sync would (no sync needed)."""
    posts = booru.search_posts("", 10**6, "b999999999")
    upsert_posts(cat, parse_posts(posts, booru.url))
    return posts


def fast_client(url: str) -> DanbooruClient:
    return DanbooruClient(DanbooruSettings(base_url=url), backoff_base=0.02, timeout=5)


def file_md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def media_rows(cat) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in cat.fetchall("SELECT md5, status, path, bytes, error FROM media")}


def assert_complete(ws, cat, posts: list[dict]) -> None:
    """Every downloadable image on disk with its md5; every other post with the right status."""
    rows = media_rows(cat)
    for p in posts:
        if p.get("is_banned"):
            assert "md5" not in p  # no md5 -> no media row; counted as not downloadable
            continue
        status, path, size, _ = rows[p["md5"]]
        if p["file_ext"] == "mp4":
            assert status == "not_image"
            continue
        assert status == "ok", (p["id"], rows[p["md5"]])
        on_disk = ws.resolve(path)
        assert on_disk == ws.image_path(p["md5"], "png")
        assert file_md5(on_disk) == p["md5"] and size == on_disk.stat().st_size
    assert not list(ws.images_dir.rglob("*.part")), "temp files left behind"


def test_fetch_with_faults_verifies_every_image(workspace, catalogue, booru):
    plan = FaultPlan(rate=0.15, seed=7, media=["500", "503", "truncated", "reset"])
    b = booru(60, seed=1, banned=0.1, mp4=0.1, deleted=0.1, faults=plan)
    posts = store_booru_posts(catalogue, b)
    summary = fetch_images(workspace, catalogue, fast_client(b.url), max_workers=4)
    injected = [f for kind, _, f in plan.injected if kind == "media"]
    assert any(f.truncate for f in injected) and any(f.status for f in injected)
    assert summary["failed"] == 0, summary["errors"]
    assert_complete(workspace, catalogue, posts)
    c = counts(catalogue)
    n_banned = sum(1 for p in posts if p.get("is_banned"))
    assert c["media"]["not_downloadable"] == n_banned > 0
    n_mp4 = sum(1 for p in posts if p["file_ext"] == "mp4" and not p.get("is_banned"))
    assert c["media"]["not_image"] == n_mp4 > 0
    assert summary["downloaded"] == c["media"]["ok"] == summary["to_fetch"]
    # a rerun has nothing to do and downloads nothing
    served = len(b.requests)
    again = fetch_images(workspace, catalogue, fast_client(b.url), max_workers=4)
    assert again["downloaded"] == 0 and again["skipped"] == summary["downloaded"]
    assert len(b.requests) == served


def test_bad_bodies_fail_then_a_rerun_retries(workspace, catalogue, booru, monkeypatch):
    b = booru(0)
    good = b.add_image_post(1, tiny_png(1), "png", ["a"])
    lying = b.add_image_post(2, tiny_png(2), "png", ["b"])
    lying["md5"] = "0" * 32  # the catalogue expects other bytes than the server sends
    html = b.add_image_post(3, b"<html>not an image</html>", "png", ["c"], size=(8, 8))
    store_booru_posts(catalogue, b)
    b.faults = FaultPlan().always("media", Fault(truncate=0.5))
    s = fetch_images(workspace, catalogue, fast_client(b.url), max_workers=2, tries=2)
    rows = media_rows(catalogue)
    assert s["failed"] == 3 and s["downloaded"] == 0
    assert all(rows[m][0] == "failed" and rows[m][1] is None for m in rows)
    assert "interrupted" in rows[good["md5"]][3] or "short body" in rows[good["md5"]][3]
    assert not list(workspace.images_dir.rglob("*.png")), "a failed download left a file"
    b.faults = None  # the server recovers: failed md5s are retried, honest failures stay failed
    s = fetch_images(workspace, catalogue, fast_client(b.url), max_workers=2, tries=2)
    rows = media_rows(catalogue)
    assert rows[good["md5"]][0] == "ok" and s["downloaded"] == 1 and s["failed"] == 2
    assert "md5 mismatch" in rows["0" * 32][3]
    assert "not a png/jpg/webp/gif" in rows[html["md5"]][3]


def test_decompression_bomb_and_404_are_refused(workspace, catalogue, booru, monkeypatch):
    b = booru(0)
    big = b.add_image_post(1, tiny_png(5, size=(64, 64)), "png", ["a"])
    gone = b.add_image_post(2, tiny_png(6), "png", ["a"])
    store_booru_posts(catalogue, b)
    b._media.pop(gone["file_url"])  # the server lost this file
    monkeypatch.setattr("gaudi_engine.booru.images.MAX_PIXELS", 64 * 63)
    t0 = time.time()
    s = fetch_images(workspace, catalogue, fast_client(b.url), max_workers=2)
    rows = media_rows(catalogue)
    assert s["failed"] == 2
    assert "decompression bomb" in rows[big["md5"]][3]
    assert "404" in rows[gone["md5"]][3] and time.time() - t0 < 5


def test_leftovers_of_a_killed_run_are_cleaned_or_adopted(workspace, catalogue, booru):
    b = booru(0)
    posts = [b.add_image_post(i, tiny_png(i), "png", ["a"]) for i in (1, 2, 3)]
    store_booru_posts(catalogue, b)
    p_part, p_trunc, p_done = (workspace.image_path(p["md5"], "png") for p in posts)
    for p in (p_part, p_trunc, p_done):
        p.parent.mkdir(parents=True, exist_ok=True)
    stale = p_part.parent / f".{posts[0]['md5']}.png.999.1.part"
    stale.write_bytes(tiny_png(1)[:20])           # killed mid-download
    p_trunc.write_bytes(tiny_png(2)[:30])         # (should never happen) a short final file
    p_done.write_bytes(tiny_png(3))               # killed after the rename, before the row
    served = len(b.requests)
    s = fetch_images(workspace, catalogue, fast_client(b.url), max_workers=2)
    assert not stale.exists()
    assert s["adopted"] == 1 and s["downloaded"] == 2 and len(b.requests) == served + 2
    assert_complete(workspace, catalogue, posts)
    # a run that died while refetching an md5 that is ok leaves a temp file the next run skips
    # past; the marker of the unfinished run makes the next one sweep every temp file
    stale = p_done.parent / f".{posts[2]['md5']}.png.998.7.part"
    stale.write_bytes(b"partial")
    (workspace.images_dir / ".fetch-images.running").write_text("998")
    s = fetch_images(workspace, catalogue, fast_client(b.url), max_workers=2)
    assert s["temp_files_removed"] == 1 and s["skipped"] == 3 and not stale.exists()
    assert not (workspace.images_dir / ".fetch-images.running").exists()


def test_sample_variant_and_base_url(workspace, catalogue, booru):
    from PIL import Image

    b = booru(0)
    post = b.add_image_post(1, tiny_png(1, size=(32, 32)), "png", ["a"])
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, "JPEG")
    sample_path = f"/data/sample/{post['md5']}.jpg"
    b._media[sample_path] = buf.getvalue()
    post["media_asset"]["variants"].append(
        {"type": "sample", "url": sample_path, "width": 16, "height": 16, "file_ext": "jpg"})
    posts = b.search_posts("", 10, "1")
    # stored as if synced from this booru at another address (a demo booru that moved port)
    old = "http://127.0.0.1:9"
    moved = json.loads(json.dumps(posts).replace(b.url, old))
    upsert_posts(catalogue, parse_posts(moved, old))
    s = fetch_images(workspace, catalogue, fast_client(b.url), variant="sample", base_url=b.url)
    status, path, size, _ = media_rows(catalogue)[post["md5"]]
    assert s["downloaded"] == 1 and status == "ok"
    assert path.endswith(f"{post['md5']}.jpg") and size == len(buf.getvalue())
    with pytest.raises(Exception, match="unknown --variant"):
        fetch_images(workspace, catalogue, fast_client(b.url), variant="huge")


class SlowMedia:
    """~10% faults plus a small delay on every media answer, so a kill lands mid-run."""

    def __init__(self, plan: FaultPlan, delay: float):
        self.plan, self.delay = plan, delay

    def pick(self, kind: str, path: str):
        fault = self.plan.pick(kind, path)
        if fault is None and kind == "media":
            return Fault(delay=self.delay)
        return fault


def _progress(path) -> tuple[int, int | None, float]:
    """(done, total, seconds since the start record) from a progress JSONL file."""
    done, total, started = 0, None, None
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line being written
            started = rec["time"] if rec.get("event") == "start" else started
            total = rec.get("total", total)
            done = max(done, rec.get("done") or 0)
    return done, total, (time.time() - started) if started else 0.0


def test_sigkill_halfway_then_resume(workspace, booru, run_gaudi):
    b = booru(120, seed=11, banned=0.05, deleted=0.05, mp4=0.05)
    b.faults = SlowMedia(FaultPlan(rate=0.1, seed=12, media=["500", "503", "truncated", "reset"]),
                         delay=0.05)
    cat = open_catalogue(workspace.catalogue_path)
    posts = store_booru_posts(cat, b)
    cat.close()  # the subprocess needs the catalogue
    jsonl = workspace.root / "fetch.jsonl"
    args = ["--workspace", workspace.root, "fetch-images", "--max-workers", "2",
            "--progress-jsonl", jsonl]
    seen = {}

    def ready() -> bool:  # past 40% and past one flush interval, so some rows are committed
        seen["done"], seen["total"], elapsed = _progress(jsonl)
        total = seen["total"]
        return bool(total) and seen["done"] >= total * 0.4 and elapsed > media_mod.FLUSH_SECONDS * 1.3

    sigkill_when(args, ready, log=workspace.root / "killed.log", timeout=60)
    done, total = seen["done"], seen["total"]
    assert total and 0 < done < total

    cat = open_catalogue(workspace.catalogue_path)
    rows = media_rows(cat)
    ok = [m for m, r in rows.items() if r[0] == "ok"]
    assert 0 < len(ok) < total  # killed halfway, and what counts as ok is really there
    for m in ok:
        assert file_md5(workspace.resolve(rows[m][1])) == m
    cat.close()

    rc, out, err = run_gaudi(*args[:-2], "--max-workers", "4", timeout=120)
    assert rc == 0, err
    assert "fetch-images:" in out and "0 failed" in out and "not downloadable" in out
    cat = open_catalogue(workspace.catalogue_path)
    try:
        assert_complete(workspace, cat, posts)
        n_images = sum(1 for p in posts if not p.get("is_banned") and p["file_ext"] == "png")
        assert counts(cat)["media"]["ok"] == n_images
    finally:
        cat.close()


def test_fetch_images_cli_errors(workspace, run_gaudi):
    rc, out, err = run_gaudi("--workspace", workspace.root, "fetch-images", "--max-workers", "0")
    assert rc == 2 and err.strip().count("\n") == 0 and "--max-workers" in err
    rc, out, err = run_gaudi("fetch-images", "--help")
    assert rc == 0 and "--variant" in out and "--skip-existing" in out and "--base-url" in out


def test_unreachable_booru_stops_with_one_line(workspace, booru, run_gaudi):
    b = booru(30, seed=2)
    cat = open_catalogue(workspace.catalogue_path)
    store_booru_posts(cat, b)
    url = b.url
    b.stop()  # the booru goes away: every download is refused
    with pytest.raises(GaudiError, match="in a row failed .*connection refused"):
        fetch_images(workspace, cat, DanbooruClient(DanbooruSettings(base_url=url), max_tries=1),
                     max_workers=2)
    failed = cat.scalar("SELECT count(*) FROM media WHERE status = 'failed'")
    assert 8 <= failed < 30  # recorded (a rerun retries them), and it did not try all 30
    cat.close()
