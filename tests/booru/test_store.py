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


def _old_catalogue(path, version: int, post_tags: str) -> None:
    """A catalogue as schema `version` left it: two posts and the given post_tags rows (v2 had
    post_tags without its primary key)."""
    con = duckdb.connect(str(path))
    con.execute(_schema_sql())
    if version == 2:
        con.execute("CREATE TABLE pt AS SELECT * FROM post_tags; DROP TABLE post_tags; "
                    "ALTER TABLE pt RENAME TO post_tags")
    con.execute(f"INSERT INTO schema_meta VALUES ('schema_version', '{version}')")
    con.execute("INSERT INTO posts (id, md5) VALUES (1, 'x'), (2, 'y')")
    con.execute(f"INSERT INTO post_tags VALUES {post_tags}")
    con.close()


def test_v1_catalogue_migrates_keeping_post_tags(tmp_path):
    path = tmp_path / "old.duckdb"
    _old_catalogue(path, 1, "(1, 'a'), (1, 'b'), (2, 'a')")
    cat = open_catalogue(path)
    try:
        assert cat.schema_version() == SCHEMA_VERSION >= 2
        assert _tags(cat) == {1: ["a", "b"], 2: ["a"]}
        upsert_posts(cat, [_post(1, ["c"])])
        assert _tags(cat) == {1: ["c"], 2: ["a"]}
    finally:
        cat.close()


def _scan(cat, tag, below=None):
    """The plain answer the tag index must reproduce."""
    extra, params = ("AND post_id < ?", [tag, below]) if below else ("", [tag])
    return [r[0] for r in cat.fetchall(
        f"SELECT post_id FROM post_tags WHERE tag = ? {extra} ORDER BY post_id DESC", params)]


def test_tag_index_stays_exact_through_new_and_changed_posts(catalogue, monkeypatch):
    from gaudi_engine.catalogue import queries, tag_index

    monkeypatch.setattr(tag_index, "MIN_POSTS", 20)
    vocab = ["a", "b", "c", "d", "e"]

    def page(ids, shift):
        return [_post(i, [vocab[(i + shift) % 5], vocab[(i * 3 + shift) % 5]]) for i in ids]

    def check():
        for tag in [*vocab, "absent"]:
            for below in (None, 30, 7):
                got = queries._candidate_ids(catalogue, tag, below, 1000)
                assert got == _scan(catalogue, tag, below), (tag, below)
        for p in queries.latest_posts(catalogue, limit=1000):  # posts.general_tags == post_tags
            assert p["tags"] == sorted(set(_tags(catalogue).get(p["id"], [])))

    upsert_posts(catalogue, page(range(1, 11), 0))
    assert tag_index.indexed_posts(catalogue) is None  # small: a scan answers
    check()
    upsert_posts(catalogue, page(range(11, 31), 0))   # 30 posts: the index is built
    assert tag_index.indexed_posts(catalogue) == 30
    assert catalogue.scalar("SELECT count(*) FROM tag_index_dirty") == 0
    check()
    upsert_posts(catalogue, page(range(31, 36), 0))   # new posts: answered from post_tags
    upsert_posts(catalogue, page([3, 17, 33], 2))     # changed tags: the snapshot is stale for them
    assert catalogue.fetchall("SELECT post_id, stale FROM tag_index_dirty ORDER BY ALL") == [
        (3, True), (17, True), (31, False), (32, False), (33, False), (33, True), (34, False), (35, False)]
    check()
    assert catalogue.fetchall("SELECT DISTINCT post_id FROM tag_index_delta ORDER BY 1") == [
        (3,), (17,), (31,), (32,), (33,), (34,), (35,)]  # each post's current tags, once
    assert catalogue.scalar("SELECT count(*) FROM tag_index_delta WHERE post_id = 33") == len(
        _tags(catalogue)[33])
    upsert_posts(catalogue, page(range(36, 60), 1))   # dirty >= max(MIN_POSTS, 1/4): rebuilt
    assert tag_index.indexed_posts(catalogue) == 59
    assert catalogue.scalar("SELECT count(*) FROM tag_index_dirty") == 0
    assert catalogue.scalar("SELECT count(*) FROM tag_index_delta") == 0
    check()


def test_v2_catalogue_gains_general_tags(tmp_path):  # migrations 3 and 4
    path = tmp_path / "v2.duckdb"
    _old_catalogue(path, 2, "(1, 'b'), (1, 'a'), (2, 'a')")
    cat = open_catalogue(path)
    try:
        assert cat.fetchall("SELECT id, general_tags FROM posts ORDER BY id") == [(1, "a b"), (2, "a")]
    finally:
        cat.close()


def test_old_catalogue_read_only_still_lists_tags(tmp_path):
    from gaudi_engine.catalogue.queries import latest_posts

    path = tmp_path / "v1.duckdb"
    _old_catalogue(path, 1, "(1, 'b'), (1, 'a'), (2, 'a')")
    cat = open_catalogue(path, read_only=True)  # no migration: no posts.general_tags
    try:
        assert [(p["id"], p["tags"]) for p in latest_posts(cat, tag="a")] == [(2, ["a"]), (1, ["a", "b"])]
    finally:
        cat.close()
