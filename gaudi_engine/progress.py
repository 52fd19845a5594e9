"""Progress for long work: a tqdm bar on a terminal and, with `--progress-jsonl FILE`, one JSON
object per line that the studio tails.

Line format (every line has `time`, `stage`, `event`):
  {"event": "start",    "stage": "sync", "total": 500}
  {"event": "progress", "stage": "sync", "done": 200, "total": 500, ...extra}
  {"event": "metric",   "stage": "train-align", "step": 10, "epoch": 0, "loss": 0.31, ...}
  {"event": "log",      "stage": "sync", "message": "..."}
  {"event": "end",      "stage": "sync", "done": 500, "status": "ok" | "failed" | "cancelled"}

A pass that only prepares a command's main work (loading models or images, calibration passes)
is a `Progress(..., prelude=True)`: its records carry `"prelude": true`, so a reader shows its
counts without taking them for the command's own fraction (which would run to 100 % and back).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

_sinks: dict[str, "_JsonlSink"] = {}
_sinks_lock = threading.Lock()
_default_jsonl: str | None = None


def set_default_jsonl(path: str | os.PathLike | None) -> None:
    """The CLI calls this once with `--progress-jsonl`; every Progress then writes there."""
    global _default_jsonl
    _default_jsonl = str(path) if path else None


class _JsonlSink:
    def __init__(self, path: str):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=str) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()


def _sink(path: str | None) -> _JsonlSink | None:
    if not path:
        return None
    with _sinks_lock:
        if path not in _sinks:
            _sinks[path] = _JsonlSink(path)
        return _sinks[path]


def emit(stage: str, event: str, jsonl: str | None = None, **fields: Any) -> None:
    """Write one record to the progress JSONL (if any)."""
    sink = _sink(jsonl or _default_jsonl)
    if sink:
        sink.write({"time": round(time.time(), 3), "stage": stage, "event": event, **fields})


class Progress:
    """A bar plus JSONL records. Thread-safe `update`. Use as a context manager."""

    def __init__(self, stage: str, total: int | None = None, unit: str = "it",
                 jsonl: str | None = None, disable: bool | None = None, min_interval: float = 0.25,
                 prelude: bool = False):
        from tqdm import tqdm  # light import; kept local so importing this module is free

        self.stage = stage
        self.total = total
        self.done = 0
        self._jsonl = jsonl
        self._lock = threading.Lock()
        self._last_emit = 0.0
        self._min_interval = min_interval
        if disable is None:
            disable = not sys.stderr.isatty()
        self._bar = tqdm(total=total, desc=stage, unit=unit, disable=disable, dynamic_ncols=True,
                         file=sys.stderr)
        self._status = "ok"
        self._tag = {"prelude": True} if prelude else {}
        emit(stage, "start", jsonl, total=total, **self._tag)

    def set_total(self, total: int | None) -> None:
        with self._lock:
            self.total = total
            self._bar.total = total
            self._bar.refresh()

    def update(self, n: int = 1, **extra: Any) -> None:
        with self._lock:
            self.done += n
            self._bar.update(n)
            if extra:
                self._bar.set_postfix({k: v for k, v in extra.items() if not isinstance(v, (dict, list))},
                                      refresh=False)
            now = time.time()
            final = self.total is not None and self.done >= self.total
            if final or now - self._last_emit >= self._min_interval:
                self._last_emit = now
                emit(self.stage, "progress", self._jsonl, done=self.done, total=self.total, **self._tag, **extra)

    def metric(self, **fields: Any) -> None:
        emit(self.stage, "metric", self._jsonl, **fields)

    def log(self, message: str) -> None:
        emit(self.stage, "log", self._jsonl, message=message)
        if not self._bar.disable:
            self._bar.write(message, file=sys.stderr)

    def fail(self, status: str = "failed") -> None:
        self._status = status

    def close(self, **extra: Any) -> None:
        self._bar.close()
        emit(self.stage, "end", self._jsonl, done=self.done, total=self.total, status=self._status,
             **self._tag, **extra)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is KeyboardInterrupt:
            self._status = "cancelled"
        elif exc_type is not None:
            self._status = "failed"
        self.close()
