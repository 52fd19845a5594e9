"""Read-only questions the studio and the CLI ask the catalogue."""
from __future__ import annotations

from pathlib import Path
from typing import Any

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


def latest_posts(cat, limit: int = 48, tag: str | None = None, offset: int = 0,
                 with_image: bool = False) -> list[dict[str, Any]]:
    """The newest posts (by id, imports included) for the studio's grid, optionally only those
    carrying general tag `tag`, optionally only those whose image is downloaded.
    Each: id, image_path (relative to the workspace, None if not downloaded), tags (list),
    rating, width, height, md5, is_deleted."""
    where, params = [], []
    if tag:
        where.append("p.id IN (SELECT post_id FROM post_tags WHERE tag = ?)")
        params.append(tag.strip().lower().replace(" ", "_"))
    if with_image:
        where.append("m.status = 'ok'")
    sql = f"""
        SELECT p.id, CASE WHEN m.status = 'ok' THEN m.path END, p.rating, p.width, p.height,
               p.md5, p.is_deleted
        FROM posts p LEFT JOIN media m ON m.md5 = p.md5
        {"WHERE " + " AND ".join(where) if where else ""}
        ORDER BY p.id DESC LIMIT ? OFFSET ?"""
    rows = cat.fetchall(sql, [*params, int(limit), int(offset)])
    if not rows:
        return []
    ids = [r[0] for r in rows]
    tag_rows = cat.fetchall(
        "SELECT post_id, list(tag ORDER BY tag) FROM post_tags WHERE post_id IN "
        f"(SELECT unnest(?::BIGINT[])) GROUP BY post_id", [ids])
    tags_of = {pid: list(tags) for pid, tags in tag_rows}
    return [{"id": pid, "image_path": path, "tags": tags_of.get(pid, []), "rating": rating,
             "width": w, "height": h, "md5": md5, "is_deleted": bool(deleted)}
            for pid, path, rating, w, h, md5, deleted in rows]


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
