"""`gaudi export-manifest`: the CSV that training reads (DESIGN §3).

One row per post whose image is on disk (media `ok` and the file exists) and that is not
deleted. `image_path` is relative to the workspace; `tags` are the post's general tags,
space-separated and sorted (Danbooru's own order).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from ..progress import Progress

COLUMNS = ["post_id", "image_path", "tags", "md5", "rating", "width", "height", "file_ext", "source"]

_SQL = """
SELECT p.id, m.path, coalesce(t.tags, ''), p.md5, p.rating, p.width, p.height, p.file_ext, p.source
FROM posts p
JOIN media m ON m.md5 = p.md5 AND m.status = 'ok' AND m.path IS NOT NULL
LEFT JOIN (SELECT post_id, string_agg(tag, ' ' ORDER BY tag) AS tags
           FROM post_tags GROUP BY post_id) t ON t.post_id = p.id
WHERE NOT coalesce(p.is_deleted, FALSE)
ORDER BY p.id
"""


def export_manifest(ws, cat, out: str | os.PathLike | None = None) -> int:
    """Write the manifest to `out` (default `data/manifest.csv`; a relative path is taken
    relative to the workspace). Returns the number of rows written. Written to a temp file and
    renamed, so a reader never sees half a manifest."""
    out_path = ws.resolve(out) if out else ws.data_dir / "manifest.csv"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cur = cat.cursor().execute(_SQL)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    rows = 0
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh, \
                Progress("export-manifest", unit="post") as bar:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            while batch := cur.fetchmany(10_000):
                kept = [r for r in batch if ws.resolve(r[1]).is_file()]
                writer.writerows(kept)
                rows += len(kept)
                bar.update(len(batch), written=rows)
        os.replace(tmp, out_path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return rows


def manifest_images(ws, manifest: str | Path | None = None) -> dict[int, Path]:
    """post_id -> image path, from the manifest the pipeline trained on."""
    path = ws.resolve(manifest or "data/manifest.csv")
    if not path.exists():
        return {}
    out = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                out[int(row["post_id"])] = ws.resolve(row["image_path"])
            except (KeyError, ValueError):
                continue
    return out
