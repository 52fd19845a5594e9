"""`gaudi export-catalogue --parquet DIR`: the catalogue as Parquet shards that DuckDB, Spark or
pandas read in place (`SELECT ... FROM 'DIR/posts/*.parquet'`).

Layout: `DIR/<table>/<table>_<i>.parquet` for posts, post_tags, tags and descriptions (the
`tag_descriptions` table), zstd-compressed, rows in key order, a new file about every
`rows_per_file` rows (row groups of at most ~100k rows; DuckDB rounds them up to 2048-row
vectors). Each table is written beside its target and then
swapped in, so a reader never sees half an export and a rerun replaces the old one.

Secrets never go out: the catalogue holds none by design (credentials live in the environment),
and the one column a user could smuggle them into, `posts.origin` (a base URL given as
`https://user:key@host` or with `?api_key=`), is written with them cut out.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import GaudiError
from .db import Catalogue

# userinfo in a URL, and credential query parameters (Danbooru: login/api_key)
_ORIGIN = ("regexp_replace(regexp_replace(origin, '://[^/@]*@', '://'), "
           "'([?&])(api_key|login|password|token)=[^&]*', '\\1\\2=REDACTED', 'g') AS origin")

TABLES: dict[str, str] = {
    "posts": ("SELECT id, md5, file_ext, file_size, rating, width, height, file_url, large_file_url, "
              f"preview_url, is_deleted, is_banned, source, {_ORIGIN}, created_at, raw::VARCHAR AS raw, "
              "general_tags, synced_at FROM posts ORDER BY id"),
    "post_tags": "SELECT post_id, tag FROM post_tags ORDER BY post_id, tag",
    "tags": "SELECT name, category, post_count, is_deprecated, updated_at FROM tags ORDER BY name",
    "descriptions": "SELECT tag, idx, text, source, updated_at FROM tag_descriptions ORDER BY tag, idx",
}


def export_parquet(cat: Catalogue, out_dir: str | os.PathLike,
                   rows_per_file: int = 1_000_000) -> dict[str, Any]:
    """Write every table of TABLES under `out_dir`; returns {table: {"rows", "files"}}."""
    if rows_per_file < 1:
        raise GaudiError("--rows-per-file must be 1 or more")
    group = min(rows_per_file, 100_000)
    groups_per_file = -(-rows_per_file // group)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise GaudiError(f"{out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GaudiError(f"cannot create {out}: {exc.strerror or exc}") from None
    for table in TABLES:  # refuse before writing anything: never delete what we did not write
        _check_replaceable(out / table)
    summary: dict[str, Any] = {}
    cur = cat.cursor()
    for table, sql in TABLES.items():
        target = out / table
        tmp = out / f".{table}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            path = str(tmp).replace("'", "''")
            cur.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet, COMPRESSION zstd, "
                        f"ROW_GROUP_SIZE {group}, ROW_GROUPS_PER_FILE {groups_per_file}, "
                        f"FILENAME_PATTERN '{table}_{{i}}')")
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise GaudiError(f"cannot write {target}: {str(exc).splitlines()[0]}") from None
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        files = sorted(target.glob("*.parquet"))
        glob = str(target / "*.parquet").replace("'", "''")
        rows = cur.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0]  # metadata only
        summary[table] = {"rows": int(rows), "files": len(files)}
    return summary


def _check_replaceable(folder: Path) -> None:
    if not folder.exists():
        return
    if not folder.is_dir() or any(not (p.is_file() and p.suffix == ".parquet") for p in folder.iterdir()):
        raise GaudiError(f"{folder} holds files other than an earlier export's .parquet shards: "
                         f"choose another --parquet folder")
