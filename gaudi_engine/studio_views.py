"""Read-only views of a workspace's runs for the studio (no UI code): runs and checkpoints,
pseudo-mask runs and their masks (their exports: gaudi_engine/pseudo/export.py).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GaudiError
from .catalogue.manifest import manifest_images  # noqa: F401 (the studio reads it from here)
from .workspace import Workspace

RUN_KINDS = {"align": "Stage A (align)", "pseudomasks": "pseudo-masks", "seg": "Stage B (segmenter)"}


def run_kind(name: str) -> str:
    return name.split("_", 1)[0] if "_" in name else name


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def list_runs(ws: Workspace) -> list[dict[str, Any]]:
    """Every run folder under runs/ (jobs' own folder aside), newest first, with checkpoints."""
    rows = []
    if not ws.runs_dir.exists():
        return rows
    for d in ws.runs_dir.iterdir():
        if not d.is_dir() or d.name.startswith((".", "_")):
            continue
        ckpts = sorted(d.glob("checkpoints/*.pt"), key=_checkpoint_order) + sorted(d.glob("*.pt"))
        metrics = _last_metrics(d)
        rows.append({
            "run": d.name,
            "kind": RUN_KINDS.get(run_kind(d.name), run_kind(d.name)),
            "checkpoints": ", ".join(ws.rel(p) + (" (resume)" if _is_resume_state(p) else "") for p in ckpts),
            "modified": time.strftime("%Y-%m-%d %H:%M", time.localtime(d.stat().st_mtime)),
            "metrics": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in metrics.items())[:120],
            "_mtime": d.stat().st_mtime,
        })
    rows.sort(key=lambda r: r["_mtime"], reverse=True)
    for r in rows:
        r.pop("_mtime")
    return rows


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


def _checkpoint_order(p: Path) -> tuple[int, str]:
    """model.pt (the model) first, then last.pt (an older run's only one), then others by name."""
    return ({"model.pt": 0, "last.pt": 1}.get(p.name, 2), p.name)


def _is_resume_state(p: Path) -> bool:
    """last.pt beside a model.pt: the same model + optimizer state, only for --resume."""
    return p.name == "last.pt" and (p.parent / "model.pt").is_file()


def checkpoints(ws: Workspace, kind: str) -> list[str]:
    """Checkpoints of runs of one kind (`align`, `seg`), newest run first, `model.pt` first (a run
    from before model.pt existed: its `last.pt`); a last.pt beside a model.pt is left out (the
    same model + resume state)."""
    out: list[tuple[float, tuple[int, str], str]] = []
    for d in ws.runs_dir.glob(f"{kind}_*"):
        for p in d.glob("checkpoints/*.pt"):
            if not _is_resume_state(p):
                out.append((d.stat().st_mtime, _checkpoint_order(p), ws.rel(p)))
    out.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [t[2] for t in out]


def latest_checkpoint(ws: Workspace, kind: str) -> str | None:
    found = checkpoints(ws, kind)
    return found[0] if found else None


def pseudomask_runs(ws: Workspace) -> list[str]:
    """Pseudo-mask runs that have an index, highest version first."""
    runs = [d.name for d in ws.runs_dir.glob("pseudomasks_*") if (d / "index.parquet").exists()]
    return sorted(runs, key=_natural, reverse=True)


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
