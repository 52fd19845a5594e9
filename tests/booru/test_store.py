"""catalogue/store.py: bulk upserts keep every post once with exactly its current general tags."""
from __future__ import annotations

import duckdb

from gaudi_engine.catalogue import open_catalogue
from gaudi_engine.catalogue.db import SCHEMA_VERSION, _schema_sql
from gaudi_engine.catalogue.store import read_sync_state, upsert_posts, upsert_tags, upsert_wiki


def _post(i, tags, md5="auto"):
    return {"id": i, "md5": f"{i:032x}" if md5 == "auto" else md5, "file_ext": "png",
            "raw": '{"id": %d}' % i, "general_tags": tags}


def _tags(cat):
    out = {}
    for pid, tag in cat.fetchall("SELECT post_id, tag FROM post_tags ORDER BY post_id, tag"):
        out.setdefault(pid, []).append(tag)
    return out


def test_reupsert_replaces_tags_and_dedupes(catalogue):
    assert upsert_posts(catalogue, [_post(1, ["a", "b"]), _post(2, ["a", "a", "c"])]) == 2
    assert _tags(catalogue) == {1: ["a", "b"], 2: ["a", "c"]}
    # a post seen again with other tags (and twice in one page: the last one wins)
    assert upsert_posts(catalogue, [_post(1, ["x"]), _post(3, ["b"]), _post(1, ["b", "z"])]) == 2
    assert _tags(catalogue) == {1: ["b", "z"], 2: ["a", "c"], 3: ["b"]}
    assert catalogue.scalar("SELECT count(*) FROM posts") == 3
    upsert_posts(catalogue, [_post(2, [])])
    assert 2 not in _tags(catalogue)
    assert catalogue.fetchone("SELECT md5, is_banned, is_deleted FROM posts WHERE id = 2") == (f"{2:032x}", False, False)


def test_failed_page_leaves_nothing(catalogue):
    bad = [_post(5, ["a"]), {**_post(6, ["b"]), "raw": "{not json"}]
    try:
        upsert_posts(catalogue, bad)
    except duckdb.Error:
        pass
    else:
        raise AssertionError("invalid raw JSON was accepted")
    assert catalogue.scalar("SELECT count(*) FROM posts") == 0
    assert catalogue.scalar("SELECT count(*) FROM post_tags") == 0


def test_tags_and_wiki_upserts(catalogue):
    upsert_tags(catalogue, [{"name": "a", "category": 0, "post_count": 3}, {"name": "a", "category": 0, "post_count": 4}])
    assert catalogue.fetchall("SELECT name, category, post_count, is_deprecated FROM tags") == [("a", 0, 4, False)]
    upsert_wiki(catalogue, [{"title": "a", "body": "[[b]]", "plain": "b", "other_names": ["ア"]}])
    assert catalogue.fetchone("SELECT body, plain, other_names FROM wiki_pages") == ("[[b]]", "b", ["ア"])
    assert read_sync_state(catalogue, "nothing") is None


def test_v1_catalogue_migrates_keeping_post_tags(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(_schema_sql())
    con.execute("INSERT INTO schema_meta VALUES ('schema_version', '1')")
    con.execute("INSERT INTO posts (id, md5) VALUES (1, 'x'), (2, 'y')")
    con.execute("INSERT INTO post_tags VALUES (1, 'a'), (1, 'b'), (2, 'a')")
    con.close()
    cat = open_catalogue(path)
    try:
        assert cat.schema_version() == SCHEMA_VERSION >= 2
        assert _tags(cat) == {1: ["a", "b"], 2: ["a"]}
        upsert_posts(cat, [_post(1, ["c"])])
        assert _tags(cat) == {1: ["c"], 2: ["a"]}
    finally:
        cat.close()
