"""A workspace's runs: what kinds there are, how a new run is named, which run of a kind is the
newest, what a run folder holds and when it changed, and deleting one (explicitly).

A run lives in `runs/<name>/`. Its *kind* is the pipeline stage that makes it, named by the stage's
first run: `align_s1` (Stage A), `pseudomasks_v1`, `seg_s1` (Stage B), `pseudomasks_v2`, `seg_s2`
(round 2). A new run of a kind takes the kind's name when it is free, else the next number:
`align_s1`, `align_s1-002`, `align_s1-003`... so launching a stage again never replaces an earlier
run. Its *family* (`align`, `pseudomasks`, `seg`) is the part before the first `_` (any name, e.g.
`align_big`, still belongs to one). Folders starting with `_` or `.` (jobs, the studio's files)
are not runs. What each run was made from is in its `lineage.json` (`lineage`).
"""
from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GaudiError
from .lineage import LINEAGE_FILE, is_live, read_lineage
from .workspace import Workspace

ALIGN, PSEUDO_V1, SEG_S1, PSEUDO_V2, SEG_S2 = "align_s1", "pseudomasks_v1", "seg_s1", "pseudomasks_v2", "seg_s2"
SEG_ORACLE = "seg_oracle"  # a segmenter trained on ground-truth masks
KINDS = {ALIGN: "Stage A (align)", PSEUDO_V1: "pseudo-masks v1", SEG_S1: "Stage B (s1)",
         PSEUDO_V2: "pseudo-masks v2", SEG_S2: "Stage B round 2 (s2)", SEG_ORACLE: "oracle segmenter"}
FAMILIES = {"align": "Stage A (align)", "pseudomasks": "pseudo-masks", "seg": "Stage B (segmenter)"}
_NUMBERED = re.compile(r"^(?P<kind>.+?)-(?P<n>\d{3,})$")
# files whose change is a change of the run (a run folder's own mtime moves only when an entry is
# added or removed in it, not when checkpoints/model.pt is rewritten)
_WATCHED = ("lineage.json", "config.json", "metrics.jsonl", "index.parquet", "structure.json",
            "calibration.json", "checkpoints/*.pt", "*.pt", "parts/*.jsonl")


def kind_of(name: str) -> str:
    """`align_s1-003` -> `align_s1`; a name without a number is its own kind."""
    m = _NUMBERED.match(name)
    return m.group("kind") if m else name


def family_of(name: str) -> str:
    """`pseudomasks_v1-002` -> `pseudomasks`."""
    return name.split("_", 1)[0] if "_" in name else kind_of(name)


def new_run_name(ws: Workspace, kind: str) -> str:
    """The name a new run of `kind` gets: the kind itself when free, else kind-NNN past the highest."""
    taken = {d.name for d in ws.runs_dir.iterdir()} if ws.runs_dir.exists() else set()
    if kind not in taken:
        return kind
    numbers = [int(m.group("n")) for t in taken if (m := _NUMBERED.match(t)) and m.group("kind") == kind]
    return f"{kind}-{max(numbers, default=1) + 1:03d}"


def new_run_dir(ws: Workspace, kind: str) -> Path:
    """Claim a new run folder of `kind` (created empty, so a second caller gets the next name)."""
    ws.runs_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path = ws.runs_dir / new_run_name(ws, kind)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise GaudiError(f"could not find a free run name for {kind} under {ws.rel(ws.runs_dir)}")


@dataclass
class RunInfo:
    name: str
    path: Path
    kind: str
    family: str
    status: str            # done | running | interrupted | failed | cancelled | partial | "" (unknown)
    created: float         # from the lineage, else the folder's time
    modified: float        # the newest of the run's files (`_WATCHED`)
    lineage: dict[str, Any] | None = None
    checkpoints: list[Path] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status == "done"

    @property
    def inputs(self) -> dict[str, dict]:
        return (self.lineage or {}).get("inputs", {})


def run_modified(path: Path) -> float:
    """The time the run last changed: its newest watched file (or the folder)."""
    times = [path.stat().st_mtime]
    for pattern in _WATCHED:
        for p in path.glob(pattern):
            try:
                times.append(p.stat().st_mtime)
            except OSError:
                continue
    return max(times)


def _checkpoint_order(p: Path) -> tuple[int, str]:
    """model.pt (the model) first, then last.pt (an older run's only one), then others by name."""
    return ({"model.pt": 0, "last.pt": 1}.get(p.name, 2), p.name)


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def _status(path: Path, lineage: dict | None, ckpts: list[Path]) -> str:
    if lineage is None:  # a run from before lineage.json: finished if it holds its product
        return "done" if ckpts or (path / "index.parquet").exists() else ""
    status = str(lineage.get("status", ""))
    if status == "running" and not is_live(lineage):
        return "interrupted"
    return status


def run_info(ws: Workspace, path: Path) -> RunInfo:
    lineage = read_lineage(path)
    ckpts = sorted(path.glob("checkpoints/*.pt"), key=_checkpoint_order) + sorted(path.glob("*.pt"))
    created = _parse_time((lineage or {}).get("created")) or path.stat().st_mtime
    return RunInfo(name=path.name, path=path, kind=kind_of(path.name), family=family_of(path.name),
                   status=_status(path, lineage, ckpts), created=created, modified=run_modified(path),
                   lineage=lineage, checkpoints=ckpts)


def list_runs(ws: Workspace, kind: str | None = None, family: str | None = None) -> list[RunInfo]:
    """Run folders (of one kind or family), newest first (by when they were created)."""
    if not ws.runs_dir.exists():
        return []
    out = []
    for d in ws.runs_dir.iterdir():
        if not d.is_dir() or d.name.startswith((".", "_")):
            continue
        if kind is not None and kind_of(d.name) != kind:
            continue
        if family is not None and family_of(d.name) != family:
            continue
        out.append(run_info(ws, d))
    out.sort(key=lambda r: (r.created, r.modified, r.name), reverse=True)
    return out


def latest_run(ws: Workspace, kind: str, finished: bool = True) -> RunInfo | None:
    """The newest run of `kind` (a finished one unless `finished=False`), or None."""
    for r in list_runs(ws, kind=kind):
        if r.finished or not finished:
            return r
    return None


def latest_checkpoint_of(ws: Workspace, kind: str) -> str | None:
    """`runs/<newest finished run of kind>/checkpoints/model.pt` (workspace-relative), or None."""
    r = latest_run(ws, kind)
    if r is None:
        return None
    usable = [p for p in r.checkpoints if p.name in ("model.pt", "last.pt")]
    return ws.rel(usable[0]) if usable else None


def made_from(run: RunInfo) -> str:
    """One line: what the run was made from, the runs first (`align_ckpt: align_s1 @1a2b3c4d`),
    then the files by name (`manifest.csv @5e6f7a8b`); short sha256 prefixes."""
    runs_part, files_part = [], []
    for name, rec in run.inputs.items():
        sha = f" @{rec['sha256'][:8]}" if rec.get("sha256") else ""
        if rec.get("run"):
            runs_part.append(f"{name}: {rec['run']}{sha}")
        else:
            files_part.append(f"{Path(rec.get('path', '?')).name}{sha}")
    return " · ".join(runs_part + files_part)


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                continue
    return total


def run_path(ws: Workspace, name: str) -> Path:
    """The folder of the run called `name` (a name under runs/, or a path to one)."""
    p = Path(name)
    path = p.resolve() if p.is_absolute() or len(p.parts) > 1 else (ws.runs_dir / name).resolve()
    runs = ws.runs_dir.resolve()
    if path.parent != runs or path.name.startswith((".", "_")):
        raise GaudiError(f"{name}: not a run (runs are the folders directly under {ws.rel(runs)}/)")
    if not path.is_dir():
        raise GaudiError(f"no run called {path.name} under {ws.rel(runs)}/")
    return path


def delete_run(ws: Workspace, name: str) -> int:
    """Delete one run folder (never one a live process is writing). Returns the bytes freed."""
    path = run_path(ws, name)
    if is_live(read_lineage(path)):
        raise GaudiError(f"{path.name} is being written by a running process: cancel that job first")
    size = folder_bytes(path)
    shutil.rmtree(path)
    return size


def looks_like_run(path: Path) -> bool:
    return any((path / f).exists() for f in (LINEAGE_FILE, "config.json", "checkpoints", "index.parquet",
                                             "parts", "metrics.jsonl"))


def refuse_another_writer(ws: Workspace, out: Path, lineage: dict[str, Any] | None) -> None:
    """One line when another live process is writing the run in `out`. Only DDP rank 0 asks:
    the other ranks find rank 0's own lineage running."""
    rank0 = int(os.environ.get("RANK", 0)) == 0
    if rank0 and is_live(lineage) and lineage.get("pid") != os.getpid():
        raise GaudiError(f"{ws.rel(out)} is being written by another process (pid {lineage.get('pid')})")


def prepare_training_out(ws: Workspace, out: Path, *, resume: bool, overwrite: bool) -> None:
    """A trainer may write into `out` when it is new or empty, when it resumes the run there, or
    when asked to replace it (`--overwrite`: the folder is emptied). Otherwise a folder that holds a
    trained run is left alone with a one-line error."""
    lineage = read_lineage(out)
    refuse_another_writer(ws, out, lineage)
    if resume:
        return
    ckpts = list(out.glob("checkpoints/*.pt")) if out.is_dir() else []
    if not ckpts:
        return
    if not overwrite:
        raise GaudiError(f"{ws.rel(out)} already holds a trained run: pass --resume to continue it, "
                         f"--overwrite to replace it, or leave out --out for a new run")
    if int(os.environ.get("RANK", 0)) == 0:
        clear_run(out)


def clear_run(out: Path) -> None:
    """Empty a run folder for --overwrite (only a folder that looks like a run)."""
    if not looks_like_run(out):
        raise GaudiError(f"{out}: does not look like a run folder; not deleting it")
    shutil.rmtree(out)
    out.mkdir(parents=True)


def prepare_labelling_out(ws: Workspace, out: Path, inputs: dict[str, dict], config: dict[str, Any], *,
                          overwrite: bool) -> None:
    """A pseudo-labelling run goes on in its folder (a rerun skips the posts it has) only with the
    same inputs and settings; a folder made from other ones is replaced only with `--overwrite`."""
    lineage = read_lineage(out)
    if lineage is None:
        return  # new, or a run from before lineage.json (resumed as it always was)
    if overwrite:
        refuse_another_writer(ws, out, lineage)
        clear_run(out)
        return
    config = json.loads(json.dumps(config, default=str))  # as the lineage holds it (lists, not tuples)
    old_inputs = lineage.get("inputs", {})
    # an input left out on a rerun (--tag-desc: the checkpoint's own) is no other input
    changed = sorted(k for k in set(old_inputs) & set(inputs)
                     if old_inputs[k].get("sha256") != inputs[k].get("sha256"))
    old_cfg = (lineage.get("config") or {}).get("pseudo")
    if old_cfg is not None and old_cfg != config.get("pseudo"):
        changed.append("settings")
    if changed:
        raise GaudiError(f"{ws.rel(out)} was made from other inputs ({', '.join(changed)} differ): pass "
                         f"--overwrite to replace it, or leave out --out for a new run")


def output_folder(ws: Workspace, out: str | os.PathLike | None, kind: str, *, resume: bool = False) -> Path:
    """The folder a command writes: `--out` as given (relative to the workspace); without it, on
    --resume the newest run of `kind`, else a new run of `kind` (claimed now)."""
    if out:
        p = Path(out)
        return p if p.is_absolute() else ws.root / p
    if resume:
        r = latest_run(ws, kind, finished=False)
        if r is None:
            raise GaudiError(f"--resume: no {kind} run under {ws.rel(ws.runs_dir)}/ to resume (pass --out)")
        return r.path
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # every process must write the same folder
        raise GaudiError("under torchrun pass --out (each process would pick its own new run name)")
    return new_run_dir(ws, kind)


def input_of(ws: Workspace, run_name: str, *keys: str) -> str | None:
    """Follow a run's lineage upstream: `input_of(ws, "seg_s1", "pseudomasks", "align_ckpt")` is the
    align checkpoint the pseudo-masks seg_s1 was trained on were made with (workspace-relative),
    or None when a link is missing or that file is gone."""
    path: str | None = None
    name: str | None = run_name
    for key in keys:
        lineage = read_lineage(ws.runs_dir / name) if name else None
        rec = ((lineage or {}).get("inputs") or {}).get(key)
        if not rec:
            return None
        path, name = rec.get("path"), rec.get("run")
    return path if path and ws.resolve(path).exists() else None
