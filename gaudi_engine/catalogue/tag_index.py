"""A tag -> posts lookup for the grid's tag filter at Danbooru scale (DESIGN §9: < 100 ms at
1M posts / 25M post_tags).

`post_tags` is stored in post order, which keeps per-post work cheap (a post's tags, the
delete-then-insert of an upsert) but makes "posts with tag T" a scan of every row (100+ ms at
25M rows). An ART index on `tag` answers it but costs ~1 minute to build, 500 MB on disk and
2 GB of memory at that scale, and slows every page written. Instead:

- `tag_index (tid, post_id)`: a snapshot of `post_tags` sorted by tag id (`tag_index_tags` maps
  tag -> tid) and then by post id, newest first. Zonemaps skip every row group but the tag's
  own, and the newest posts come first, so a top-48 touches one or two row groups.
- `tag_index_dirty (post_id, stale)`: every post written since the snapshot; `stale` when it
  was already in the catalogue (so the snapshot may hold its old tags).
- `tag_index_delta (post_id, tag)`: those posts' current tags (a small table, scanned whole).
  Queries take the snapshot minus stale posts plus the delta, so they are exact. (Reading the
  dirty posts' rows of post_tags instead costs a full scan once a re-sync scatters them.)
- `refresh` rebuilds the snapshot (a sort of post_tags: ~5 s at 25M rows on 2 cores) and empties
  the dirty list in the same transaction; `maybe_refresh`, called by every page written, does it
  when the dirty posts reach a quarter of the indexed ones (amortised: about 5 rebuilds' worth
  of work while a catalogue grows to its size), and first once the catalogue has MIN_POSTS.
"""
from __future__ import annotations

from typing import Any

MIN_POSTS = 20_000        # below this a scan of post_tags is already fast: no index
DIRTY_FRACTION = 0.25     # rebuild when posts written since the snapshot reach this share
_META_KEY = "tag_index_posts"


def refresh(cur) -> int:
    """Rebuild the tag index from post_tags on `cur` (inside the caller's transaction if any);
    returns the number of posts indexed."""
    cur.execute("CREATE OR REPLACE TABLE tag_index_tags AS SELECT tag, "
                "(row_number() OVER (ORDER BY tag))::INTEGER AS tid FROM (SELECT DISTINCT tag FROM post_tags)")
    cur.execute("CREATE OR REPLACE TABLE tag_index AS SELECT t.tid, p.post_id FROM post_tags p "
                "JOIN tag_index_tags t USING (tag) ORDER BY t.tid, p.post_id DESC")
    cur.execute("DELETE FROM tag_index_dirty")
    cur.execute("DELETE FROM tag_index_delta")
    n = int(cur.execute("SELECT count(*) FROM posts").fetchone()[0])
    cur.execute("INSERT OR REPLACE INTO schema_meta VALUES (?, ?)", [_META_KEY, str(n)])
    return n


def indexed_posts(cur) -> int | None:
    """Posts in the catalogue when the index was last built; None if it never was."""
    row = cur.execute("SELECT value FROM schema_meta WHERE key = ?", [_META_KEY]).fetchone()
    return int(row[0]) if row else None


def maybe_refresh(cur) -> bool:
    """Rebuild the index if the policy above says so; True if it did."""
    built, dirty, posts = cur.execute(  # one round trip: this runs for every page written
        "SELECT (SELECT value FROM schema_meta WHERE key = ?)::BIGINT, "
        "(SELECT count(*) FROM tag_index_dirty), (SELECT count(*) FROM posts)", [_META_KEY]).fetchone()
    if built is None:
        due = posts >= MIN_POSTS
    else:
        due = dirty >= max(MIN_POSTS, DIRTY_FRACTION * built)
    if due:
        refresh(cur)
    return due


def candidate_sql(cat, tag: str, below: int | None) -> tuple[str, list[Any]] | None:
    """SQL (post_id column) and parameters for the posts carrying `tag` (below id `below`),
    answered from the index; None when there is no index (the caller scans post_tags)."""
    if indexed_posts(cat) is None:
        return None
    n_dirty, any_stale = cat.fetchone(
        "SELECT count(*), coalesce(bool_or(stale), false) FROM tag_index_dirty")
    branches, params = [], []
    tid = cat.scalar("SELECT tid FROM tag_index_tags WHERE tag = ?", [tag])
    if tid is not None:
        # a constant tid: zonemaps skip every other tag's row groups
        sql = f"SELECT post_id FROM tag_index i WHERE tid = {int(tid)}"
        if below is not None:
            sql += " AND post_id < ?"
            params.append(below)
        if any_stale:
            sql += (" AND NOT EXISTS (SELECT 1 FROM tag_index_dirty d "
                    "WHERE d.stale AND d.post_id = i.post_id)")
        branches.append(sql)
    if n_dirty:
        sql = "SELECT post_id FROM tag_index_delta WHERE tag = ?"  # the dirty posts' tags now
        params.append(tag)
        if below is not None:
            sql += " AND post_id < ?"
            params.append(below)
        branches.append(sql)
    if not branches:
        return "SELECT NULL::BIGINT AS post_id WHERE false", []
    return " UNION ALL ".join(branches), params
