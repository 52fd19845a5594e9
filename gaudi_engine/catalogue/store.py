"""Bulk writes into the catalogue: posts (+ their general tags), tags, wiki pages, sync state.

Every write is one statement per table over an Arrow table registered on the cursor (DESIGN §4:
never a row-by-row INSERT loop), inside one transaction. The `write_*` functions take the cursor
of an open transaction so a caller can put several writes (a page of posts and the sync cursor
that says it was stored) into the same transaction; `upsert_*` open their own.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import tag_index
from .db import Catalogue, registered

POST_SCHEMA = pa.schema([
    ("id", pa.int64()), ("md5", pa.string()), ("file_ext", pa.string()), ("file_size", pa.int64()),
    ("rating", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("file_url", pa.string()), ("large_file_url", pa.string()), ("preview_url", pa.string()),
    ("is_deleted", pa.bool_()), ("is_banned", pa.bool_()), ("source", pa.string()),
    ("origin", pa.string()), ("created_at", pa.string()), ("raw", pa.string()),
    ("general_tags", pa.string()),  # post_tags' tags for the post, sorted, space-separated
])
POST_COLUMNS = POST_SCHEMA.names
_ROW_SCHEMA = pa.schema([f for f in POST_SCHEMA if f.name != "general_tags"])

TAG_SCHEMA = pa.schema([("name", pa.string()), ("category", pa.int32()), ("post_count", pa.int64()),
                        ("is_deprecated", pa.bool_())])
WIKI_SCHEMA = pa.schema([("title", pa.string()), ("body", pa.string()), ("plain", pa.string()),
                         ("other_names", pa.list_(pa.string())), ("is_deleted", pa.bool_()),
                         ("updated_at", pa.string())])

_DEFAULTS = {"is_deleted": False, "is_banned": False}


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> Arrow (keys outside the schema ignored; missing flags default to False). Built
    column by column: `pa.Table.from_pylist` took 2.5x as long on pages of posts."""
    columns = []
    for field in schema:
        values = [r.get(field.name) for r in rows]
        default = _DEFAULTS.get(field.name)
        if default is not None:
            values = [default if v is None else v for v in values]
        columns.append(pa.array(values, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _dedupe(rows: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Last row wins: an INSERT OR REPLACE may not see the same key twice in one statement."""
    return list({r[key]: r for r in rows}.values())


def write_posts(cur, posts: list[dict[str, Any]]) -> int:
    """Upsert `posts` (rows from `booru.posts.parse_post`) and replace their `post_tags`, on the
    cursor of an open transaction. Returns the number of distinct posts written."""
    post_tbl, tag_tbl = post_tables(posts)
    if not post_tbl.num_rows:
        return 0
    write_post_tables(cur, post_tbl, tag_tbl)
    tag_index.maybe_refresh(cur)
    return post_tbl.num_rows


def post_tables(posts: list[dict[str, Any]]) -> tuple[pa.Table, pa.Table]:
    """Rows from `booru.posts.parse_post` -> the Arrow tables `write_post_tables` takes (posts
    without duplicate ids, the last row winning; their distinct general tags). Pure: bulk
    importers build them in worker processes."""
    posts = _dedupe(posts, "id")
    ids: list[int] = []
    counts: list[int] = []
    joined: list[str] = []
    for p in posts:
        distinct = sorted(set(p.get("general_tags") or ()))
        ids.append(p["id"])
        counts.append(len(distinct))
        joined.append(" ".join(distinct))  # Danbooru tags never contain a space
    general = pa.array(joined, pa.string())
    post_tbl = _table(posts, _ROW_SCHEMA).append_column("general_tags", general)
    # the tag column split out of `general` in Arrow: converting the Python list of every tag
    # string took 2/3 of this function; posts without tags are nulls, which flatten skips
    tags = pc.split_pattern(pc.if_else(pc.equal(general, ""), pa.scalar(None, pa.string()), general),
                            " ").flatten()
    # via numpy: pyarrow's typed conversion of a Python int list is ~100x slower
    tag_tbl = pa.table({"post_id": np.repeat(np.array(ids, dtype=np.int64), counts), "tag": tags})
    return post_tbl, tag_tbl


def write_post_tables(cur, post_tbl: pa.Table, tag_tbl: pa.Table) -> None:
    """The SQL of `write_posts` over ready Arrow tables (POST_SCHEMA without duplicate ids, its
    `general_tags` the sorted, space-separated tags of the `post_id, tag` pairs). Benchmarks
    feed it generated tables directly."""
    with registered(cur, _gaudi_new_posts=post_tbl, _gaudi_new_post_tags=tag_tbl):
        cols = ", ".join(c for c in POST_COLUMNS if c not in ("raw", "general_tags"))
        # only posts seen before can have tags to replace; skipping the deletes otherwise saves a
        # scan of the whole post_tags table per page (25M rows at Danbooru scale)
        old = [r[0] for r in cur.execute(
            "SELECT id FROM posts WHERE id IN (SELECT id FROM _gaudi_new_posts)").fetchall()]
        if old:  # delete + insert: an in-place INSERT OR REPLACE of scattered rows is ~10x slower
            cur.execute("DELETE FROM posts WHERE id IN (SELECT unnest(?::BIGINT[]))", [old])
        cur.execute(f"INSERT INTO posts ({cols}, raw, general_tags, synced_at) "
                    f"SELECT {cols}, raw::JSON, general_tags, now() FROM _gaudi_new_posts")
        if old:
            cur.execute("DELETE FROM post_tags WHERE post_id IN (SELECT unnest(?::BIGINT[]))", [old])
        cur.execute("INSERT INTO post_tags (post_id, tag) SELECT post_id, tag FROM _gaudi_new_post_tags")
        # the tag index answers for these posts from its delta until its next rebuild
        if old:
            cur.execute("DELETE FROM tag_index_delta WHERE post_id IN (SELECT unnest(?::BIGINT[]))", [old])
            cur.execute("INSERT INTO tag_index_dirty SELECT id, list_contains(?::BIGINT[], id) "
                        "FROM _gaudi_new_posts", [old])
        else:
            cur.execute("INSERT INTO tag_index_dirty SELECT id, false FROM _gaudi_new_posts")
        cur.execute("INSERT INTO tag_index_delta SELECT post_id, tag FROM _gaudi_new_post_tags")


def upsert_posts(cat: Catalogue, posts: list[dict[str, Any]]) -> int:
    """Upsert posts and their general tags in one transaction; returns the number written."""
    with cat.transaction() as cur:
        return write_posts(cur, posts)


def write_sync_state(cur, query_key: str, lowest_id: int | None, highest_id: int | None,
                     done: bool, posts_seen: int) -> None:
    # an UPDATE first: DuckDB's INSERT OR REPLACE costs ~4 ms even for this one row, per page
    updated = cur.execute("UPDATE sync_state SET lowest_id = ?, highest_id = ?, done = ?, "
                          "posts_seen = ?, updated_at = now() WHERE query_key = ?",
                          [lowest_id, highest_id, done, posts_seen, query_key]).fetchone()[0]
    if not updated:
        cur.execute("INSERT INTO sync_state VALUES (?, ?, ?, ?, ?, now())",
                    [query_key, lowest_id, highest_id, done, posts_seen])


def read_sync_state(cat: Catalogue, query_key: str) -> dict[str, Any] | None:
    row = cat.fetchone("SELECT lowest_id, highest_id, done, posts_seen FROM sync_state "
                       "WHERE query_key = ?", [query_key])
    if row is None:
        return None
    return {"lowest_id": row[0], "highest_id": row[1], "done": bool(row[2]), "posts_seen": row[3] or 0}


def upsert_tags(cat: Catalogue, tags: list[dict[str, Any]]) -> int:
    """Upsert tag rows (`name, category, post_count, is_deprecated`); returns the number written."""
    rows = _dedupe(({"name": t["name"], "category": t.get("category"),
                     "post_count": t.get("post_count"),
                     "is_deprecated": bool(t.get("is_deprecated") or False)} for t in tags), "name")
    if not rows:
        return 0
    with cat.transaction() as cur:
        with registered(cur, _gaudi_new_tags=_table(rows, TAG_SCHEMA)):
            cur.execute("INSERT OR REPLACE INTO tags (name, category, post_count, is_deprecated, "
                        "updated_at) SELECT name, category, post_count, is_deprecated, now() "
                        "FROM _gaudi_new_tags")
    return len(rows)


def upsert_wiki(cat: Catalogue, pages: list[dict[str, Any]]) -> int:
    """Upsert wiki pages (`title, body, plain, other_names, is_deleted, updated_at`)."""
    rows = _dedupe(({"title": p["title"], "body": p.get("body") or "", "plain": p.get("plain"),
                     "other_names": [str(n) for n in (p.get("other_names") or [])],
                     "is_deleted": bool(p.get("is_deleted") or False),
                     "updated_at": p.get("updated_at")} for p in pages), "title")
    if not rows:
        return 0
    with cat.transaction() as cur:
        with registered(cur, _gaudi_new_wiki=_table(rows, WIKI_SCHEMA)):
            cur.execute("INSERT OR REPLACE INTO wiki_pages SELECT title, body, plain, other_names, "
                        "is_deleted, updated_at FROM _gaudi_new_wiki")
    return len(rows)


def chunks(items: list, size: int) -> Iterable[list]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch
