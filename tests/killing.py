"""Kill-and-resume tests (issue 17.4): start the real `gaudi` command in a subprocess, SIGKILL it as
soon as it has shown progress (polled on disk: a checkpoint, parts lines, a progress JSONL count —
never a blind sleep), then rerun it. Every such test goes through `sigkill_when` (or
`kill_and_rerun`, which also reruns the command); what it compares afterwards (rows, mask files,
weights, that no worker outlived the command) is its own.

The killed process writes its output to a log file, not a pipe: a pipe nobody reads fills up and
stalls the process before it gets anywhere.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tests.conftest import REPO_ROOT, gaudi_env, run_gaudi_cmd

POLL_S = 0.02
TEMP_MARKERS = (".tmp", ".part")


def jsonl_records(path: str | os.PathLike) -> list[dict]:
    """The complete JSON lines of a file being written (a line cut mid-write is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def progress_done(path: str | os.PathLike, stage: str | None = None) -> int:
    """The highest `done` of the `progress` events in a `--progress-jsonl` file so far (0 before any)."""
    return max((int(r.get("done") or 0) for r in jsonl_records(path)
                if r.get("event") == "progress" and (stage is None or r.get("stage") == stage)), default=0)


def count_lines(path: str | os.PathLike) -> int:
    """Complete lines in a file (0 when it does not exist yet)."""
    path = Path(path)
    return path.read_bytes().count(b"\n") if path.exists() else 0


@dataclass
class Killed:
    seconds: float        # how long the command ran
    children: list[int]   # its child processes just before the kill (see `assert_ended`)


def sigkill_when(args: Sequence, ready: Callable[[], bool], *, log: str | os.PathLike, timeout: float = 90,
                 env: dict[str, str] | None = None) -> Killed:
    """Run `gaudi *args` until `ready()` is true, then SIGKILL it (that process only, as `kill -9
    PID` does). Fails the test when the command ends first (too short to be killed: the test
    proves nothing) or never gets ready."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    children: list[int] = []
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "gaudi_engine", *map(str, args)], stdout=fh, stderr=fh,
                                env=gaudi_env(env), cwd=REPO_ROOT)
        try:
            while proc.poll() is None and time.monotonic() - t0 < timeout:
                if ready():
                    children = child_pids(proc.pid)
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(POLL_S)
            else:
                if proc.poll() is None:
                    raise AssertionError(f"no progress to kill on within {timeout} s; log:\n{_tail(log)}")
                raise AssertionError(f"the command ended (exit {proc.returncode}) before it could be killed; "
                                     f"log:\n{_tail(log)}")
        finally:
            if proc.poll() is None:  # not ready in time, or a failure above: no orphan left running
                proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, _tail(log))
    return Killed(time.monotonic() - t0, children)


def kill_and_rerun(args: Sequence, ready: Callable[[], bool], *, log: str | os.PathLike,
                   rerun_args: Sequence | None = None, timeout: float = 90,
                   env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """SIGKILL `gaudi *args` once `ready()`, then run `gaudi *rerun_args` (default: the same args)
    to the end; returns the rerun's (returncode, stdout, stderr)."""
    sigkill_when(args, ready, log=log, timeout=timeout, env=env)
    return run_gaudi_cmd(*(args if rerun_args is None else rerun_args), env=env, timeout=timeout * 2)


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return sorted(out)


def running(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def assert_ended(pids: Sequence[int], within: float = 10) -> None:
    """Every process in `pids` ends within `within` seconds (workers must not outlive a killed
    command: they would go on writing beside its rerun). Ends any still running, then fails."""
    deadline = time.monotonic() + within
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    alive = [p for p in pids if running(p)]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    assert not alive, f"processes {alive} outlived the command that started them"


def leftover_temp_files(root: str | os.PathLike) -> list[Path]:
    """Files under `root` that an atomic write leaves only when it was cut off (temp, .part)."""
    found = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            if any(m in name for m in TEMP_MARKERS):
                found.append(Path(dirpath) / name)
    return sorted(found)


def files_under(root: str | os.PathLike) -> dict[str, bytes]:
    """Relative path -> bytes of every file under `root` (to compare two runs' outputs)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tail(log: Path, n: int = 3000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-n:] if log.exists() else ""
