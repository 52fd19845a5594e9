"""A run's `metrics.jsonl` on `--resume`: a run killed after its last checkpoint had logged steps
that the resumed run redoes, and possibly half a line. Keeping only what the checkpoint holds
makes the log of a killed-and-resumed run read like an uninterrupted one (each step once)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..fileio import atomic_write_text


def trim_metrics_log(path: str | os.PathLike, step: int) -> int:
    """Drop the records of steps after `step` (and any line cut mid-write) from the log at `path`,
    atomically. Returns how many lines were dropped (0 when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(rec, dict) and int(rec.get("step", 0) or 0) > step:
            dropped += 1
            continue
        kept.append(line + "\n")
    if dropped:
        atomic_write_text(path, "".join(kept))
    return dropped
