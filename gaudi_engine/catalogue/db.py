"""One DuckDB connection per catalogue file per process; `cursor()` hands each thread its own.

DuckDB allows one writing process per file. Opening a file another process holds raises
`CatalogueLocked` with one line naming the holder, never a traceback.
"""
from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

import duckdb

from ..errors import CatalogueLocked, GaudiError

SCHEMA_VERSION = 4

_V3 = """
ALTER TABLE posts ADD COLUMN IF NOT EXISTS general_tags VARCHAR;
UPDATE posts SET general_tags = t.tags FROM (
    SELECT post_id, string_agg(tag, ' ' ORDER BY tag) AS tags FROM post_tags GROUP BY post_id) t
WHERE posts.id = t.post_id AND posts.general_tags IS NULL;
CREATE TABLE IF NOT EXISTS tag_index_tags (tag VARCHAR, tid INTEGER);
CREATE TABLE IF NOT EXISTS tag_index (tid INTEGER, post_id BIGINT);
CREATE TABLE IF NOT EXISTS tag_index_dirty (post_id BIGINT, stale BOOLEAN);
CREATE TABLE IF NOT EXISTS tag_index_delta (post_id BIGINT, tag VARCHAR);
DELETE FROM tag_index_delta;
INSERT INTO tag_index_delta SELECT post_id, tag FROM post_tags
WHERE post_id IN (SELECT post_id FROM tag_index_dirty);
"""

# version -> SQL that brings a catalogue of version-1 up to it. Version 1 is schema.sql itself.
MIGRATIONS: dict[int, str] = {
    # post_tags without PRIMARY KEY / ART index: at 25M rows the two indexes made bulk ingest
    # 5-7x slower (and the file 15x larger) while the tag filter is as fast from a column scan;
    # uniqueness is kept by the only writer, catalogue/store.py (delete-then-insert per post).
    2: """
    CREATE TABLE post_tags_v2 AS SELECT DISTINCT post_id, tag FROM post_tags;
    DROP TABLE post_tags;
    ALTER TABLE post_tags_v2 RENAME TO post_tags;
    """,
    # posts.general_tags (sorted, space-separated): a post's tags in one row read (the grid's page
    # of 48 posts scattered over 25M post_tags rows took 50+ ms), written with post_tags. And a
    # tag -> posts lookup for the grid's tag filter (a scan of 25M post_tags takes 100+ ms):
    # catalogue/tag_index.py, built on a later write once the catalogue is big enough.
    3: _V3,
    # the same, idempotent: repairs catalogues made by development snapshots of version 3
    4: _V3,
}

# Checkpoint after 128 MB of WAL instead of DuckDB's 16 MB: a sync page writes ~0.5 MB (the raw
# JSON), and each checkpoint rewrites the posts key index and partial row groups, so at the
# default a third of the upsert time went to checkpoints. The WAL is replayed after a crash.
_CONFIG = {"checkpoint_threshold": "128MB"}

_open: dict[tuple[str, bool], "Catalogue"] = {}
_open_lock = threading.Lock()


def _schema_sql() -> str:
    return resources.files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")


class Catalogue:
    """A catalogue file. Use `open_catalogue(path)` to share one connection within a process."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self._local = threading.local()
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise GaudiError(f"no catalogue at {self.path}: run `gaudi init-db` (or a sync/import) first")
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only, config=_CONFIG)
        except duckdb.IOException as exc:  # lock held by another process, or not a DuckDB file
            raise _explain_open_error(self.path, exc) from None
        except duckdb.Error as exc:
            raise GaudiError(f"cannot open catalogue {self.path}: {str(exc).splitlines()[0]}") from None
        if not read_only:
            self.migrate()

    # -- connection handling ---------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (created on first use)."""
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cur = cur
        return cur

    def close(self) -> None:
        with _open_lock:
            for key, cat in list(_open.items()):
                if cat is self:
                    del _open[key]
        self._con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN … COMMIT on this thread's cursor; ROLLBACK on any exception."""
        cur = self.cursor()
        cur.execute("BEGIN TRANSACTION")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")

    # -- convenience -----------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> duckdb.DuckDBPyConnection:
        return self.cursor().execute(sql, params or [])

    def fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        return self.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Sequence[Any] | None = None) -> tuple | None:
        return self.execute(sql, params).fetchone()

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        row = self.fetchone(sql, params)
        return row[0] if row else None

    def df(self, sql: str, params: Sequence[Any] | None = None):
        return self.execute(sql, params).df()

    # -- schema ----------------------------------------------------------------------------
    def schema_version(self) -> int:
        try:
            v = self.scalar("SELECT value FROM schema_meta WHERE key = 'schema_version'")
        except duckdb.CatalogException:
            return 0
        return int(v) if v is not None else 0

    def migrate(self) -> int:
        """Create the schema or bring it up to SCHEMA_VERSION; returns the version."""
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise GaudiError(
                f"catalogue {self.path} has schema version {current}, newer than this GaUDI "
                f"({SCHEMA_VERSION}): upgrade GaUDI"
            )
        if current == SCHEMA_VERSION:
            return current
        with self.transaction() as cur:
            if current == 0:
                cur.execute(_schema_sql())
                current = 1
            for version in range(current + 1, SCHEMA_VERSION + 1):
                cur.execute(MIGRATIONS[version])
            cur.execute(
                "INSERT OR REPLACE INTO schema_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
            )
        return SCHEMA_VERSION


@contextmanager
def registered(cur: duckdb.DuckDBPyConnection, **tables: Any) -> Iterator[duckdb.DuckDBPyConnection]:
    """Arrow/pandas tables visible to SQL under their keyword names for the block's duration
    (bulk writes go `INSERT ... SELECT FROM name`, never row by row)."""
    for name, table in tables.items():
        cur.register(name, table)
    try:
        yield cur
    finally:
        for name in tables:
            cur.unregister(name)


def _explain_open_error(path: Path, exc: Exception) -> GaudiError:
    msg = str(exc)
    if "lock" in msg.lower():
        pid = re.search(r"PID (\d+)", msg)
        holder = f" (PID {pid.group(1)})" if pid else ""
        return CatalogueLocked(
            f"catalogue {path} is in use by another process{holder}: stop it (e.g. the studio) "
            f"or run this from the studio, then try again"
        )
    return GaudiError(f"cannot open catalogue {path}: {msg.splitlines()[0]}")


def open_catalogue(path: str | Path, read_only: bool = False) -> Catalogue:
    """The process-wide Catalogue for `path` (one connection per file per process)."""
    key = (str(Path(path).resolve()), read_only)
    with _open_lock:
        cat = _open.get(key)
        if cat is None:
            cat = Catalogue(path, read_only=read_only)
            _open[key] = cat
        return cat
