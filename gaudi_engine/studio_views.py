"""Read-only views of a workspace's runs for the studio (no UI code): the runs table (with each
run's lineage), checkpoints, pseudo-mask runs (finished, and in progress with their count so far)
and their masks (their exports: gaudi_engine/pseudo/export.py). Run kinds, names and "the newest
run of a kind" are `gaudi_engine/runs.py`'s.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import runs as runs_mod
from .errors import GaudiError
from .catalogue.manifest import manifest_images  # noqa: F401 (the studio reads it from here)
from .workspace import Workspace

RUNS_COLUMNS = ["run", "kind", "status", "made from", "created", "modified", "checkpoints", "metrics"]


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def list_runs(ws: Workspace) -> list[dict[str, Any]]:
    """Every run under runs/ (`runs.list_runs`), newest first: status, what it was made from (its
    lineage), when it was created and last changed, its checkpoints and last metrics."""
    rows = []
    for r in runs_mod.list_runs(ws):
        metrics = _last_metrics(r.path)
        rows.append({
            "run": r.name,
            "kind": runs_mod.KINDS.get(r.kind) or runs_mod.FAMILIES.get(r.family, r.family),
            "status": _status_text(r),
            "made from": runs_mod.made_from(r),
            "created": _when(r.created),
            "modified": _when(r.modified),
            "checkpoints": ", ".join(ws.rel(p) + (" (resume)" if _is_resume_state(p) else "") for p in r.checkpoints),
            "metrics": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in metrics.items())[:120],
        })
    return rows


def _status_text(r: "runs_mod.RunInfo") -> str:
    if r.status in ("running", "partial") and r.family == "pseudomasks":
        done, total = pseudomask_progress(r.path, r.lineage)
        return f"{r.status} {done}/{total or '?'}"
    return r.status


def _last_metrics(run_dir: Path) -> dict[str, Any]:
    """The last line of the run's metrics.jsonl (loss etc.), numbers only."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    last = None
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 8192))
        for raw in fh.read().splitlines():
            try:
                last = json.loads(raw)
            except ValueError:
                continue
    if not isinstance(last, dict):
        return {}
    return {k: v for k, v in last.items() if isinstance(v, (int, float)) and k not in ("time",)}


def _is_resume_state(p: Path) -> bool:
    """last.pt beside a model.pt: the same model + optimizer state, only for --resume."""
    return p.name == "last.pt" and (p.parent / "model.pt").is_file()


def checkpoints(ws: Workspace, family: str) -> list[str]:
    """Checkpoints of runs of one family (`align`, `seg`): finished runs first, newest first, then
    runs that stopped early (cancelled, failed: their last epoch's model); `model.pt` first (a run
    from before model.pt existed: its `last.pt`); a last.pt beside a model.pt is left out (the
    same model + resume state). Runs still being written are left out."""
    found = [r for r in runs_mod.list_runs(ws, family=family) if r.status != "running"]
    found.sort(key=lambda r: not r.finished)  # stable: newest first within each group
    return [ws.rel(p) for r in found
            for p in r.checkpoints if p.parent.name == "checkpoints" and not _is_resume_state(p)]


def latest_checkpoint(ws: Workspace, family: str) -> str | None:
    found = checkpoints(ws, family)
    return found[0] if found else None


def pseudomask_runs(ws: Workspace) -> list[str]:
    """Finished pseudo-mask runs (with an index), newest first."""
    return [r.name for r in runs_mod.list_runs(ws, family="pseudomasks")
            if (r.path / "index.parquet").exists() and r.status not in ("running", "partial")]


def pseudomask_runs_in_progress(ws: Workspace) -> list[tuple[str, int, int | None]]:
    """(name, posts done, posts expected) of each pseudo-mask run a process is writing now."""
    out = []
    for r in runs_mod.list_runs(ws, family="pseudomasks"):
        if r.status in ("running", "partial"):
            out.append((r.name, *pseudomask_progress(r.path, r.lineage)))
    return out


_counted: dict[Path, tuple[int, int]] = {}  # parts file -> (bytes counted, lines in them)


def _lines(path: Path) -> int:
    """Lines of an append-only file, counting only what was added since the last call (the studio
    asks every few seconds; a large run's parts files are not read again)."""
    offset, lines = _counted.get(path, (0, 0))
    size = path.stat().st_size
    if size < offset:  # rewritten: count anew
        offset, lines = 0, 0
    with open(path, "rb") as fh:
        fh.seek(offset)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            lines += chunk.count(b"\n")
            offset += len(chunk)
    _counted[path] = (offset, lines)
    return lines


def pseudomask_progress(run_dir: Path, lineage: dict | None) -> tuple[int, int | None]:
    """(posts finished so far, posts expected) of a pseudo-mask run: one line per finished post in
    its parts files (counted, not parsed: a run can be large)."""
    done = sum(_lines(part) for part in run_dir.glob("parts/*.jsonl"))
    return done, ((lineage or {}).get("expected") or {}).get("posts")


def _read_mask(path: Path) -> np.ndarray | None:
    from PIL import Image

    if not path.exists():
        return None
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 127


def pseudo_masks(index, post_id: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(accepted, rejected) masks of one image of a pseudo-mask run (a PseudoMaskIndex), each
    {label: bool array}; rejected parts of an accepted mask are labelled `tag (part)`."""
    accepted: dict[str, np.ndarray] = {}
    rejected: dict[str, np.ndarray] = {}
    for r in index.scores(int(post_id)):
        m = _read_mask(index.run_dir / r["mask_path"])
        if m is None:
            continue
        if r["accepted"]:
            accepted[r["tag"]] = m
            part = _read_mask(index.run_dir / "rejected" / str(post_id) / Path(r["mask_path"]).name)
            if part is not None and part.any():
                rejected[f"{r['tag']} (part)"] = part
        else:
            rejected[r["tag"]] = m
    return accepted, rejected
