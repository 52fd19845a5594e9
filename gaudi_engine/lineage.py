"""A run's lineage: `lineage.json` in its folder says what it was made from — each input file's
path and sha256 (checkpoints, manifest, descriptions; a pseudo-mask run by its index.parquet),
the command and its settings, when it started, was resumed and finished, and which process writes
it. The Runs table and `gaudi runs list` show it; a rerun into the folder compares against it.

  {"command": "pseudolabels", "status": "running" | "done" | "failed" | "cancelled" | "partial",
   "created": "2026-12-03T16:40:02Z", "finished": null, "resumed": [...], "pid": 123, "host": "...",
   "inputs": {"align_ckpt": {"path": "runs/align_s1/checkpoints/model.pt", "run": "align_s1",
                             "sha256": "..."}, "manifest": {...}},
   "config": {...}, "expected": {"posts": 600}, "shards_total": 2, "shards": {"0/2": "..."}}
("partial": some shards of a sharded run have ended, not all.)

Settings whose name says they are a secret (key, token, password, auth...) are never written.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from .child_process import pid_alive
from .fileio import atomic_write_text
from .workspace import Workspace

LINEAGE_FILE = "lineage.json"
_SECRET_WORDS = ("key", "token", "password", "secret", "auth", "credential")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def input_record(ws: Workspace, path: str | os.PathLike | None) -> dict[str, Any] | None:
    """{path (workspace-relative when inside), run (the run folder it lies in), sha256} of an input
    file; a folder is hashed by its `index.parquet` (a pseudo-mask run), else only named."""
    if path is None:
        return None
    p = Path(path).resolve()
    rec: dict[str, Any] = {"path": ws.rel(p)}
    try:
        rel = p.relative_to(ws.runs_dir.resolve())
        rec["run"] = rel.parts[0]
    except ValueError:
        pass
    target = p / "index.parquet" if p.is_dir() else p
    if target.is_file():
        rec["sha256"] = sha256_file(target)
    return rec


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """The settings minus anything named like a secret (and minus values JSON cannot hold)."""
    out = {}
    for k, v in config.items():
        if any(w in k.lower() for w in _SECRET_WORDS):
            continue
        out[k] = v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)
    return out


def read_lineage(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(run_dir) / LINEAGE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_live(lineage: dict[str, Any] | None) -> bool:
    """A process on this machine is writing the run now (its pid is alive)."""
    if not lineage or lineage.get("status") != "running":
        return False
    if lineage.get("host") not in (None, socket.gethostname()):
        return True  # another machine's shard: trust the file
    pid = lineage.get("pid")
    return isinstance(pid, int) and pid_alive(pid)


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Shard processes of one run update the file in turn (read-modify-write)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lineage.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update_lineage(run_dir: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    run_dir = Path(run_dir)
    with _locked(run_dir):
        data = read_lineage(run_dir) or {}
        data.update(fields)
        atomic_write_text(run_dir / LINEAGE_FILE, json.dumps(data, indent=1, default=str))
    return data


def input_records(ws: Workspace, inputs: dict[str, str | os.PathLike | None]) -> dict[str, dict[str, Any]]:
    """name -> `input_record` of each input given."""
    return {k: r for k, p in inputs.items() if (r := input_record(ws, p)) is not None}


@contextlib.contextmanager
def recorded_run(run_dir: str | os.PathLike, command: str, inputs: dict[str, dict[str, Any]],
                 config: dict[str, Any], *, resume: bool = False, shard: tuple[int, int] = (0, 1),
                 expected: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Write the run's lineage as it starts (status running), and its end: `done` with the time,
    or `failed` / `cancelled`. `inputs`: `input_records`. A resumed run keeps its
    `created` and adds the time to `resumed`; shards of one run each record their end and the
    run is done when all N have. A run that fails before writing anything but this file leaves
    no folder behind (a bad input is no run). Only rank 0 of a DDP run writes."""
    if int(os.environ.get("RANK", 0)) != 0:
        yield {}
        return
    run_dir = Path(run_dir)
    with _locked(run_dir):
        old = read_lineage(run_dir) or {}
    started = now_iso()
    data: dict[str, Any] = {"command": command, "status": "running", "created": old.get("created", started),
                            "finished": None, "pid": os.getpid(), "host": socket.gethostname(),
                            "inputs": {**old.get("inputs", {}), **inputs} if resume else inputs,
                            "config": public_config(config)}
    if old.get("created") and shard[1] == 1:  # a resumed training, a rerun that goes on labelling
        data["resumed"] = [*old.get("resumed", []), started]
    if expected:
        data["expected"] = expected
    if shard[1] > 1:
        data["shards_total"] = shard[1]
    update_lineage(run_dir, **data)
    status = "failed"
    try:
        yield data
        status = "done"
    except KeyboardInterrupt:
        status = "cancelled"
        raise
    finally:
        with _locked(run_dir):
            cur = read_lineage(run_dir) or data
            cur.update(status=status, finished=now_iso() if status == "done" else None)
            if shard[1] > 1 and status == "done":
                cur["shards"] = {**cur.get("shards", {}), f"{shard[0]}/{shard[1]}": now_iso()}
                if len(cur["shards"]) < shard[1]:  # other shards still to end
                    cur.update(status="partial", finished=None)
            atomic_write_text(run_dir / LINEAGE_FILE, json.dumps(cur, indent=1, default=str))
        if status != "done" and not old and not _has_output(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)


def _has_output(run_dir: Path) -> bool:
    """Any file in the run but the lineage's own."""
    return any(p.is_file() and p.name not in (LINEAGE_FILE, ".lineage.lock") for p in run_dir.rglob("*"))
