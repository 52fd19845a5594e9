"""A resumable job's output folder: `results.jsonl`, `errors.jsonl` and `done.txt`.

Every record is one line written by a single `os.write` on an O_APPEND descriptor, then fsync'd,
so a SIGKILL leaves whole lines only (a torn tail, should a disk ever produce one, is cut off on
the next open). A tag's result (or error) is written *before* its line in `done.txt`; opening the
store reconciles a tag found in results/errors but missing from done.txt by adding it there, so a
tag is never lost, never redone, and never both a result and an error.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any

from ..errors import GaudiError
from ..fileio import atomic_write_text

RESULTS, ERRORS, DONE = "results.jsonl", "errors.jsonl", "done.txt"


class JobStore:
    """Open with `JobStore(out_dir)`; call `.close()` (or use `with`). One process per folder."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock_fh = open(self.dir / ".lock", "w")
        except OSError as exc:
            raise GaudiError(f"cannot use {self.dir} as the output folder: {exc.strerror}") from None
        self._lock = threading.Lock()
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fh.close()
            raise GaudiError(f"{self.dir} is in use by another run: wait for it or pick another --out-dir") from None
        self.reconciled = 0
        self.results: dict[str, dict] = {}
        self.errors: dict[str, dict] = {}
        self.done: set[str] = set()
        self._open_files()
        self._reconcile()

    # -- reading ------------------------------------------------------------------------------
    def _read_jsonl(self, name: str) -> list[dict]:
        path = self.dir / name
        _cut_torn_tail(path)
        rows = []
        if path.exists():
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError:
                            continue  # cannot happen with whole-line writes; never fatal
        return rows

    def _open_files(self) -> None:
        for row in self._read_jsonl(RESULTS):
            self.results.setdefault(row.get("tag"), row)
        for row in self._read_jsonl(ERRORS):
            if row.get("tag") not in self.results:
                self.errors[row.get("tag")] = row
        done_path = self.dir / DONE
        _cut_torn_tail(done_path)
        if done_path.exists():
            self.done = {ln.strip() for ln in done_path.read_text(encoding="utf-8").splitlines() if ln.strip()}
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._fds = {name: os.open(self.dir / name, flags, 0o644) for name in (RESULTS, ERRORS, DONE)}

    def _reconcile(self) -> None:
        for tag in list(self.results) + list(self.errors):
            if tag not in self.done:
                self._append(DONE, tag + "\n")
                self.done.add(tag)
                self.reconciled += 1

    # -- writing ------------------------------------------------------------------------------
    def _append(self, name: str, line: str) -> None:
        data = line.encode("utf-8")
        n = os.write(self._fds[name], data)
        if n != len(data):  # a short write on a regular file means a full disk
            raise GaudiError(f"could not write {self.dir / name}: disk full?")
        os.fsync(self._fds[name])

    def is_done(self, tag: str) -> bool:
        return tag in self.done

    def add_result(self, record: dict[str, Any]) -> None:
        self._finish(RESULTS, record, self.results)

    def add_error(self, tag: str, message: str, **extra: Any) -> None:
        self._finish(ERRORS, {"tag": tag, "message": message, **extra}, self.errors)

    def _finish(self, name: str, record: dict, index: dict) -> None:
        tag = record["tag"]
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            if tag in self.done:  # a tag is finished exactly once
                return
            self._append(name, line)
            index[tag] = record
            self._append(DONE, tag + "\n")
            self.done.add(tag)

    def forget_errors(self) -> int:
        """Make failed tags eligible again (`--retry-failed`): rewrite errors.jsonl and done.txt
        without them, each through a temporary file and an atomic rename."""
        with self._lock:
            failed = set(self.errors)
            if not failed:
                return 0
            self.done -= failed
            self.errors.clear()
            for name in (ERRORS, DONE):
                os.close(self._fds[name])
            atomic_write_text(self.dir / ERRORS, "", fsync=True)
            atomic_write_text(self.dir / DONE, "".join(f"{t}\n" for t in sorted(self.done)), fsync=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            for name in (ERRORS, DONE):
                self._fds[name] = os.open(self.dir / name, flags, 0o644)
            return len(failed)

    def close(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            os.close(fd)
        self._fds = {}
        self._lock_fh.close()

    def __enter__(self) -> "JobStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line that has no newline (a write cut short); whole lines stay."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        fh.truncate(data.rfind(b"\n") + 1)


