"""Read-only questions the studio and the CLI ask the catalogue."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from . import tag_index

# A post's image state, whether or not `media` has a row for its md5 (banned posts have no md5).
_POST_MEDIA_STATUS = """
CASE
  WHEN m.status IS NOT NULL THEN m.status
  WHEN p.md5 IS NULL THEN 'not_downloadable'
  WHEN lower(coalesce(p.file_ext, '')) NOT IN ('png', 'jpg', 'jpeg', 'webp', 'gif') THEN 'not_image'
  WHEN p.file_url IS NULL AND p.large_file_url IS NULL THEN 'not_downloadable'
  ELSE 'pending'
END"""


def counts(cat) -> dict[str, Any]:
    """Posts, deleted, banned, distinct general tags, and posts by image status
    (`media`: ok / failed / not_downloadable / not_image / pending = not fetched yet)."""
    posts, deleted, banned, imported = cat.fetchone(
        "SELECT count(*), count(*) FILTER (WHERE is_deleted), count(*) FILTER (WHERE is_banned), "
        "count(*) FILTER (WHERE origin LIKE 'folder:%') FROM posts")
    by_status = dict(cat.fetchall(
        f"SELECT {_POST_MEDIA_STATUS} AS s, count(*) FROM posts p "
        f"LEFT JOIN media m ON m.md5 = p.md5 GROUP BY s"))
    media = {s: int(by_status.get(s, 0)) for s in
             ("ok", "failed", "not_downloadable", "not_image", "pending")}
    return {
        "posts": int(posts), "deleted": int(deleted or 0), "banned": int(banned or 0),
        "imported": int(imported or 0),
        "tags": int(cat.scalar("SELECT count(DISTINCT tag) FROM post_tags")),
        "post_tags": int(cat.scalar("SELECT count(*) FROM post_tags")),
        "media": media,
        "media_bytes": int(cat.scalar("SELECT coalesce(sum(bytes), 0) FROM media WHERE status = 'ok'")),
        "descriptions": int(cat.scalar("SELECT count(DISTINCT tag) FROM tag_descriptions")),
        "wiki_pages": int(cat.scalar("SELECT count(*) FROM wiki_pages")),
    }


def _candidate_ids(cat, tag: str | None, below: int | None, n: int, offset: int = 0) -> list[int]:
    """Post ids, newest first, optionally with general tag `tag` and below id `below`.
    A tag is answered from the tag index (catalogue/tag_index.py) when there is one; otherwise
    by a top-N over post_tags alone (no join), fast on small catalogues."""
    if tag:
        indexed = tag_index.candidate_sql(cat, tag, below)
        if indexed is not None:
            sql, params = indexed
            return [r[0] for r in cat.fetchall(
                f"SELECT post_id FROM ({sql}) ORDER BY post_id DESC LIMIT ? OFFSET ?",
                [*params, int(n), int(offset)])]
    table, col = ("post_tags", "post_id") if tag else ("posts", "id")
    where, params = [], []
    if tag:
        where.append("tag = ?")
        params.append(tag)
    if below is not None:
        where.append(f"{col} < ?")
        params.append(below)
    sql = (f"SELECT {col} FROM {table} {'WHERE ' + ' AND '.join(where) if where else ''} "
           f"ORDER BY {col} DESC LIMIT ? OFFSET ?")
    return [r[0] for r in cat.fetchall(sql, [*params, int(n), int(offset)])]


def _ok_paths(cat, md5s: list[str]) -> dict[str, str]:
    md5s = sorted({m for m in md5s if m})
    out: dict[str, str] = {}
    for i in range(0, len(md5s), 1000):
        chunk = md5s[i:i + 1000]
        out.update(cat.fetchall(
            f"SELECT md5, path FROM media WHERE status = 'ok' AND md5 IN ({', '.join('?' * len(chunk))})",
            chunk))
    return out


def _details(cat, ids: list[int], with_tags: bool = True) -> dict[int, tuple]:
    """id -> (id, md5, rating, width, height, is_deleted, general_tags or None)."""
    if not ids:
        return {}
    id_list = ", ".join(str(int(i)) for i in ids)  # ints only: safe to inline, and fastest
    tags = "general_tags" if with_tags else "NULL"
    try:
        return {r[0]: r for r in cat.fetchall(
            f"SELECT id, md5, rating, width, height, is_deleted, {tags} FROM posts "
            f"WHERE id IN ({id_list})")}
    except duckdb.BinderException:  # a catalogue older than schema 3, opened read-only
        return {r[0]: r for r in cat.fetchall(
            f"SELECT id, md5, rating, width, height, is_deleted, (SELECT string_agg(tag, ' ' "
            f"ORDER BY tag) FROM post_tags WHERE post_id = id) FROM posts WHERE id IN ({id_list})")}


def latest_posts(cat, limit: int = 48, tag: str | None = None, offset: int = 0,
                 with_image: bool = False) -> list[dict[str, Any]]:
    """The newest posts (by id; imports, with ids >= 2^40, come first) for the studio's grid,
    optionally only those carrying general tag `tag`, optionally only those whose image is
    downloaded. Each: id, image_path (relative to the workspace, None if not downloaded),
    tags (sorted list), rating, width, height, md5, is_deleted."""
    tag = tag.strip().lower().replace(" ", "_") if tag else None
    limit, offset = max(0, int(limit)), max(0, int(offset))
    if not with_image:
        ids = _candidate_ids(cat, tag, None, limit, offset)
        details = _details(cat, ids)
        paths = _ok_paths(cat, [details[i][1] for i in ids if i in details])
    else:
        # walk back through the ids in growing batches until enough have an image on disk
        ids, details, paths = [], {}, {}
        need, below, batch = offset + limit, None, max(256, 4 * (offset + limit))
        while len(ids) < need:
            cand = _candidate_ids(cat, tag, below, batch)
            if not cand:
                break
            d = _details(cat, cand, with_tags=False)
            ok = _ok_paths(cat, [row[1] for row in d.values()])
            for i in cand:
                if i in d and d[i][1] in ok:
                    ids.append(i)
                    paths[d[i][1]] = ok[d[i][1]]
            below, batch = cand[-1], min(batch * 2, 65536)
        ids = ids[offset:need]
        details = _details(cat, ids)
    ids = [i for i in ids if i in details]
    if not ids:
        return []
    out = []
    for pid in ids:
        _, md5, rating, w, h, deleted, tags = details[pid]
        # posts.general_tags mirrors post_tags (sorted): one row read, not a post_tags scan
        out.append({"id": pid, "image_path": paths.get(md5), "tags": tags.split() if tags else [],
                    "rating": rating, "width": w, "height": h, "md5": md5,
                    "is_deleted": bool(deleted)})
    return out


def post_image_path(ws, cat, post_id: int) -> Path | None:
    """The absolute path of a post's downloaded image, or None if it is not on disk."""
    row = cat.fetchone("SELECT m.path FROM posts p JOIN media m ON m.md5 = p.md5 "
                       "WHERE p.id = ? AND m.status = 'ok'", [int(post_id)])
    if not row or not row[0]:
        return None
    path = ws.resolve(row[0])
    return path if path.is_file() else None


def post_tags(cat, post_id: int) -> list[str]:
    """A post's general tags, sorted."""
    return [t for (t,) in cat.fetchall("SELECT tag FROM post_tags WHERE post_id = ? ORDER BY tag",
                                       [int(post_id)])]
