"""`gaudi import-metadata`: Danbooru post metadata dumps into the catalogue.

A dump is JSON lines (one API post object per line: `.jsonl`, `.ndjson`, `.json`, each may be
`.gz`) or Parquet whose columns carry the API's field names; PATH is one file or a folder of
such shards (searched recursively, taken in name order). Every record goes through the sync's
own code: `booru.posts.parse_post` (general tags only, banned posts without md5/URLs, deleted
posts flagged) and `catalogue.store.write_post_tables` (upsert by id, post_tags replaced), so an
import and a sync of the same posts leave the same rows, and a rerun changes nothing.

Resume: each batch is stored in ONE transaction together with the shard's position in
`sync_state` (key `dump:<path>|<size>|<mtime>`), like a sync page. A shard whose state says
done is skipped; a shard a killed run left half-way continues after its last stored batch (and
redoing a batch would only rewrite the same rows). A changed file is a new key: imported again.

Parsing is the expensive part (JSON decode + `parse_post` + Arrow tables), so it runs in worker
processes while this process writes the previous batch into DuckDB (`workers=0`: inline). The
sync's `write_posts` would also check the tag index after every page; an import checks it once
at the end (the index answers exactly meanwhile from its delta, catalogue/tag_index.py), which
saves rebuilding it ~20 times while a 1M-post catalogue grows.
"""
from __future__ import annotations

import collections
import gzip
import itertools
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from ..catalogue import tag_index
from ..catalogue.db import Catalogue
from ..catalogue.store import post_tables, read_sync_state, write_post_tables, write_sync_state
from ..child_process import die_with_parent
from ..errors import GaudiError
from ..progress import Progress
from .posts import loads, parse_post

DEFAULT_ORIGIN = "https://danbooru.donmai.us"
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
REQUIRED_FIELDS = ("id", "tag_string_general")


class DumpError(GaudiError):
    """Bad input in a dump: the message names the file and the line (or row)."""


@dataclass(frozen=True)
class Shard:
    path: Path
    name: str      # as shown in messages: relative to the folder given, or the file's path
    kind: str      # "jsonl" | "parquet"
    key: str       # sync_state key

    @property
    def gz(self) -> bool:
        return self.path.name.lower().endswith(".gz")


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES) and not path.name.lower().endswith(".gz"):
        return "parquet"
    return None


def find_shards(path: str | os.PathLike) -> list[Shard]:
    """The dump files under `path` (a file, or a folder searched recursively), in name order."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DumpError(f"{root}: no such file or folder")
    if root.is_file():
        files, base = [root], None
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and _kind(p)
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        base = root
        if not files:
            raise DumpError(f"{root}: no dump files in this folder (looked for "
                            f"{', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)}, optionally .gz)")
    shards = []
    for f in files:
        kind = _kind(f)
        if kind is None:
            raise DumpError(f"{f}: not a dump file: give .jsonl/.ndjson/.json (optionally .gz) "
                            f"or .parquet")
        try:
            st = f.stat()
        except OSError as exc:
            raise DumpError(f"{f}: cannot read: {exc.strerror or exc}") from None
        name = str(f.relative_to(base)) if base else str(f)
        shards.append(Shard(f, name, kind, f"dump:{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"))
    return shards


def count_records(shard: Shard) -> int | None:
    """Lines (JSON lines) or rows (Parquet) in a shard; None for gzip (unknown without
    decompressing it all)."""
    try:
        if shard.kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(shard.path).metadata.num_rows
        if shard.gz:
            return None
        n = 0
        last = b"\n"
        with open(shard.path, "rb") as fh:
            while block := fh.read(16 << 20):
                n += block.count(b"\n")
                last = block[-1:]
        return n + (last != b"\n")
    except OSError as exc:
        raise DumpError(f"{shard.name}: cannot read: {exc.strerror or exc}") from None
    except (pa.ArrowException, ValueError) as exc:
        raise DumpError(f"{shard.name}: not a readable Parquet file: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- reading: batches of raw records, in the main process -----------------------------------

def _jsonl_batches(shard: Shard, start: int, size: int) -> Iterator[tuple[int, Any]]:
    """(number of the batch's first line, the batch's lines as one bytes blob), after `start`
    lines already stored."""
    try:
        fh = gzip.open(shard.path, "rb") if shard.gz else open(shard.path, "rb", buffering=1 << 20)
        with fh:
            collections.deque(itertools.islice(fh, start), maxlen=0)
            line_no = start + 1
            while lines := list(itertools.islice(fh, size)):
                yield line_no, b"".join(lines)
                line_no += len(lines)
    except (OSError, EOFError) as exc:  # unreadable, or a truncated .gz
        raise DumpError(f"{shard.name}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def _parquet_batches(shard: Shard, start: int, size: int) -> Iterator[tuple[int, Any]]:
    """(number of the batch's first row, a RecordBatch), after `start` rows already stored."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(shard.path)
        missing = [f for f in REQUIRED_FIELDS if f not in pf.schema_arrow.names]
        if missing:
            raise DumpError(f"{shard.name}: no column {', '.join(map(repr, missing))}: a dump needs "
                            f"the Danbooru API's field names (only tag_string_general is imported "
                            f"as tags)")
        first_group, row = 0, 0
        meta = pf.metadata
        while first_group < meta.num_row_groups and row + meta.row_group(first_group).num_rows <= start:
            row += meta.row_group(first_group).num_rows
            first_group += 1
        skip = start - row
        row_no = start + 1
        groups = list(range(first_group, meta.num_row_groups))
        if not groups:
            return
        for batch in pf.iter_batches(batch_size=size, row_groups=groups, use_threads=False):
            if skip:
                cut = min(skip, batch.num_rows)
                batch, skip = batch.slice(cut), skip - cut
                if not batch.num_rows:
                    continue
            yield row_no, batch
            row_no += batch.num_rows
    except OSError as exc:
        raise DumpError(f"{shard.name}: cannot read: {exc.strerror or exc}") from None
    except (pa.ArrowException, ValueError) as exc:
        raise DumpError(f"{shard.name}: not a readable Parquet file: {_first_line(exc)}") from None


# -- parsing: records -> the sync's Arrow tables, in worker processes ----------------------

def parse_jsonl_blob(name: str, first_line: int, blob: bytes, origin: str) -> tuple[pa.Table, pa.Table]:
    """A batch of JSON lines -> (post table, post_tags table) for `write_post_tables`."""
    lines = blob.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    rows, wheres = [], []
    for i, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        where = f"{name}:{first_line + i}"
        try:
            obj = loads(line)
        except ValueError as exc:
            raise DumpError(f"{where}: not a JSON object ({_first_line(exc)})") from None
        rows.append(_row(obj, origin, where, raw=line.decode("utf-8")))
        wheres.append(where)
    return _tables(rows, wheres)


def parse_parquet_batch(name: str, first_row: int, batch: pa.RecordBatch,
                        origin: str) -> tuple[pa.Table, pa.Table]:
    """A Parquet record batch -> (post table, post_tags table) for `write_post_tables`."""
    columns = []
    for col in batch.columns:  # timestamps/dates/decimals as text, as the API gives them
        t = col.type
        if pa.types.is_temporal(t) or pa.types.is_decimal(t):
            col = pc.cast(col, pa.string())
        columns.append(col)
    batch = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
    wheres = [f"{name}: row {first_row + i}" for i in range(batch.num_rows)]
    rows = [_row(obj, origin, where) for obj, where in zip(batch.to_pylist(), wheres)]
    return _tables(rows, wheres)


def _row(obj: Any, origin: str, where: str, raw: str | None = None) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DumpError(f"{where}: not a Danbooru post object (a JSON {type(obj).__name__})")
    missing = [f for f in REQUIRED_FIELDS if f not in obj or (f == "id" and obj[f] is None)]
    if missing:
        raise DumpError(f"{where}: post has no {' or '.join(map(repr, missing))} field: a dump "
                        f"needs the Danbooru API's field names")
    try:
        return parse_post(obj, origin, raw=raw)
    except (ValueError, TypeError) as exc:
        raise DumpError(f"{where}: {_first_line(exc)}") from None


def _tables(rows: list[dict[str, Any]], wheres: list[str]) -> tuple[pa.Table, pa.Table]:
    try:
        return post_tables(rows)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        error = exc
    for row, where in zip(rows, wheres):  # a field of the wrong type somewhere: name its line
        try:
            post_tables([row])
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise DumpError(f"{where}: post {row['id']}: a field has the wrong type "
                            f"({_first_line(exc)})") from None
    raise DumpError(f"{wheres[0]}..{wheres[-1]}: cannot be stored ({_first_line(error)})")


# -- the import ------------------------------------------------------------------------------

def import_metadata(cat: Catalogue, path: str | os.PathLike, origin: str = DEFAULT_ORIGIN,
                    batch_size: int = 150_000, workers: int | None = None) -> dict[str, Any]:
    """Import every shard under `path`, `batch_size` posts per transaction; returns a summary
    dict. Raises DumpError (one line naming the file and line) on bad input; the transactions
    committed before it stay."""
    if batch_size < 1:
        raise GaudiError("--batch-size must be 1 or more")
    if workers is None:
        workers = default_workers()
    shards = find_shards(path)
    states = {s.key: read_sync_state(cat, s.key) or {} for s in shards}
    pending = [s for s in shards if not states[s.key].get("done")]
    writer = _BatchWriter(cat, batch_size, {
        s.key: {"lowest": states[s.key].get("lowest_id"), "highest": states[s.key].get("highest_id"),
                "position": states[s.key].get("posts_seen") or 0} for s in pending})
    counts = [count_records(s) for s in pending]
    total = (None if any(c is None for c in counts)
             else sum(c - writer.cursors[s.key]["position"] for s, c in zip(pending, counts)))
    writer.summary.update(shards=len(shards), skipped_shards=len(shards) - len(pending))
    pool = None
    if workers > 0 and pending:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=die_with_parent, initargs=(os.getpid(),))  # a kill -9 ends them too
    # in order: (shard, records, parsed tables or their future) per chunk; (shard, 0, None) ends
    # a shard. The queue runs across shards so the workers never wait at a shard's end, and
    # looks a whole transaction ahead so they parse while this process writes.
    queue: collections.deque[tuple[Shard, int, Any]] = collections.deque()
    chunk = min(batch_size, PARSE_CHUNK)
    look_ahead = workers + -(-batch_size // chunk)
    try:
        with Progress("import-metadata", total=total, unit="post") as bar:
            writer.bar = bar

            def drain() -> None:
                shard, n_records, item = queue.popleft()
                if item is None:
                    writer.end_shard(shard)
                    return
                try:
                    tables = item.result() if pool is not None else item
                except BrokenProcessPool:
                    raise GaudiError(f"a parsing worker died while reading {shard.name} (out of "
                                     f"memory?): rerun with a smaller --batch-size or --workers 0; "
                                     f"what was stored so far stays") from None
                writer.add(shard, n_records, tables)

            for shard, first, records in _all_batches(pending, writer.cursors, chunk):
                if records is None:
                    queue.append((shard, 0, None))
                else:
                    parse = parse_jsonl_blob if shard.kind == "jsonl" else parse_parquet_batch
                    item = (pool.submit(parse, shard.name, first, records, origin) if pool is not None
                            else parse(shard.name, first, records, origin))
                    queue.append((shard, _n_records(shard, records), item))
                while queue and (queue[0][2] is None or pool is None
                                 or sum(q[2] is not None for q in queue) > look_ahead):
                    drain()
            while queue:
                drain()
    finally:
        writer.rollback()  # a transaction left open by an error: its position was never stored
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if pending:
        with cat.transaction() as cur:  # one tag-index rebuild for the whole import, if due
            tag_index.maybe_refresh(cur)
        cat.execute("CHECKPOINT")  # fold the import's WAL into the file now
    return writer.summary


# Lines/rows a worker parses at a time. Transactions are larger (`batch_size`): DuckDB writes an
# append of >= 122,880 rows (a row group) straight to the file instead of through the WAL and
# its checkpoints, which made 25k-post transactions take twice as long at 300k posts.
PARSE_CHUNK = 25_000


def default_workers() -> int:
    """Parsing processes: one per core but one (this process writes), at least one."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def _all_batches(pending: list[Shard], cursors: dict[str, dict[str, Any]],
                 chunk: int) -> Iterator[tuple[Shard, int, Any]]:
    """(shard, first line/row number, records) for every chunk still to import, and
    (shard, 0, None) after each shard's last chunk."""
    for shard in pending:
        read = _jsonl_batches if shard.kind == "jsonl" else _parquet_batches
        for first, records in read(shard, cursors[shard.key]["position"], chunk):
            yield shard, first, records
        yield shard, 0, None


def _n_records(shard: Shard, records: Any) -> int:
    if shard.kind == "parquet":
        return records.num_rows
    return records.count(b"\n") + (not records.endswith(b"\n"))  # lines, as the reader cut them


class _BatchWriter:
    """Parsed chunks into the catalogue with the sync's SQL; every `batch_size` records (and at
    a shard's end) the shard's position is written and the transaction committed, so what a
    position says is stored always is."""

    def __init__(self, cat: Catalogue, batch_size: int, cursors: dict[str, dict[str, Any]]):
        self.cat = cat
        self.batch_size = batch_size
        self.cursors = cursors      # shard key -> lowest/highest id and position, as committed
        self.summary: dict[str, Any] = {"stored": 0, "records": 0, "deleted": 0, "banned": 0,
                                        "transactions": 0}
        self.bar: Progress | None = None
        self._cur = None
        self._shard: Shard | None = None
        self._records = 0           # records of the open transaction
        self._span: tuple[int | None, int | None] = (None, None)

    def add(self, shard: Shard, n_records: int, tables: tuple[pa.Table, pa.Table]) -> None:
        post_tbl, tag_tbl = tables
        if self._cur is None:
            self._cur = self.cat.cursor()
            self._cur.execute("BEGIN TRANSACTION")
            self._shard, self._records = shard, 0
            self._span = (self.cursors[shard.key]["lowest"], self.cursors[shard.key]["highest"])
        n = post_tbl.num_rows
        if n:
            write_post_tables(self._cur, post_tbl, tag_tbl)
            span = pc.min_max(post_tbl["id"])
            lo, hi = span["min"].as_py(), span["max"].as_py()
            low, high = self._span
            self._span = (lo if low is None else min(low, lo), hi if high is None else max(high, hi))
        self._records += n_records
        s = self.summary
        s["stored"] += n
        s["records"] += n_records
        s["deleted"] += pc.sum(post_tbl["is_deleted"]).as_py() or 0
        s["banned"] += post_tbl["md5"].null_count
        if self.bar is not None:
            self.bar.update(n_records, shard=shard.name, stored=s["stored"])
        if self._records >= self.batch_size:
            self._commit(done=False)

    def end_shard(self, shard: Shard) -> None:
        if self._cur is None:
            self._cur = self.cat.cursor()
            self._cur.execute("BEGIN TRANSACTION")
            self._shard, self._records = shard, 0
            self._span = (self.cursors[shard.key]["lowest"], self.cursors[shard.key]["highest"])
        self._commit(done=True)

    def _commit(self, done: bool) -> None:
        shard, cursor = self._shard, self.cursors[self._shard.key]
        position = cursor["position"] + self._records
        write_sync_state(self._cur, shard.key, self._span[0], self._span[1], done, position)
        self._cur.execute("COMMIT")
        self._cur = None
        cursor.update(lowest=self._span[0], highest=self._span[1], position=position)
        self.summary["transactions"] += 1

    def rollback(self) -> None:
        if self._cur is not None:
            self._cur.execute("ROLLBACK")
            self._cur = None
