"""Every real Danbooru capture in ../shared/fixtures/danbooru/ parses into the catalogue exactly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gaudi_engine.booru.client import DanbooruClient
from gaudi_engine.booru.posts import parse_posts, parse_tag
from gaudi_engine.booru.sync import sync_posts
from gaudi_engine.catalogue.store import upsert_posts, upsert_tags
from gaudi_engine.workspace import DanbooruSettings

# a copy travels with the repository (tests/fixtures/danbooru, see ORIGIN.md there); the shared
# folder beside the checkout is the source it was copied from
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "danbooru"
if not FIXTURES.is_dir():
    FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "danbooru"
POST_FILES = sorted(p for p in FIXTURES.glob("*.json") if "_post" in p.name)
TAG_FILES = sorted(FIXTURES.glob("*_tags_*.json"))

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared Danbooru fixtures not present")


def test_every_fixture_file_is_covered():
    names = {p.name for p in POST_FILES + TAG_FILES}
    assert names == {p.name for p in FIXTURES.glob("*.json")}
    assert len(POST_FILES) >= 4 and len(TAG_FILES) >= 4


def _objects(path: Path) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, list) else [data]


@pytest.mark.parametrize("path", POST_FILES, ids=lambda p: p.name)
def test_posts_fixture_parses_into_catalogue(path, catalogue):
    objs = _objects(path)
    assert upsert_posts(catalogue, parse_posts(json.loads(path.read_text()), "https://danbooru.donmai.us")) == len(objs)
    upsert_posts(catalogue, parse_posts(json.loads(path.read_text()), "https://danbooru.donmai.us"))  # idempotent
    assert catalogue.scalar("SELECT count(*) FROM posts") == len(objs)
    for obj in objs:
        row = catalogue.fetchone(
            "SELECT md5, file_ext, file_size, rating, width, height, file_url, large_file_url, "
            "preview_url, is_deleted, is_banned, source, created_at, raw FROM posts WHERE id = ?",
            [obj["id"]])
        assert row[:6] == (obj["md5"], obj["file_ext"], obj["file_size"], obj["rating"],
                           obj["image_width"], obj["image_height"])
        assert row[6] == obj["file_url"] and row[7] == obj["large_file_url"]
        # some current posts lack preview_file_url: the 180x180 variant stands in
        variants = {v["type"]: v["url"] for v in (obj.get("media_asset") or {}).get("variants", [])}
        assert row[8] == (obj.get("preview_file_url") or variants.get("180x180"))
        assert row[8] is not None
        assert row[9:12] == (obj["is_deleted"], obj["is_banned"], obj["source"])
        assert row[12] == obj["created_at"]
        assert json.loads(row[13]) == obj  # every field kept
        tags = {r[0] for r in catalogue.fetchall("SELECT tag FROM post_tags WHERE post_id = ?", [obj["id"]])}
        assert tags == set(obj["tag_string_general"].split())
        # character/copyright/artist/meta tags never enter post_tags
        others = " ".join(obj.get(f"tag_string_{k}", "") for k in ("character", "copyright", "artist", "meta"))
        assert not tags & set(others.split())


@pytest.mark.parametrize("path", TAG_FILES, ids=lambda p: p.name)
def test_tags_fixture_parses_into_catalogue(path, catalogue):
    objs = _objects(path)
    assert upsert_tags(catalogue, [parse_tag(t) for t in objs]) == len({t["name"] for t in objs})
    for obj in objs:
        row = catalogue.fetchone("SELECT category, post_count, is_deprecated FROM tags WHERE name = ?",
                                 [obj["name"]])
        assert row == (obj["category"], obj["post_count"], bool(obj.get("is_deprecated", False)))


def test_fixture_posts_sync_through_a_local_booru(booru, workspace, catalogue):
    """The captures served by LocalBooru (absolute CDN URLs kept as they are) sync exactly."""
    b = booru()
    objs = {o["id"]: o for p in POST_FILES for o in _objects(p)}
    for obj in objs.values():
        b.add_post(obj)
    client = DanbooruClient(DanbooruSettings(base_url=b.url, requests_per_second=0), backoff_base=0.01)
    summary = sync_posts(workspace, catalogue, client, page_size=7)
    assert summary["stored"] == len(objs) and summary["done"]
    got = dict(catalogue.fetchall("SELECT id, file_url FROM posts"))
    assert got == {i: o["file_url"] for i, o in objs.items()}
    n_tags = sum(len(set(o["tag_string_general"].split())) for o in objs.values())
    assert catalogue.scalar("SELECT count(*) FROM post_tags") == n_tags
