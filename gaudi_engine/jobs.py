"""Background work for the studio, with no UI code.

Two kinds:
- `JobManager`: long learning jobs (train-align, pseudolabels, train-segmenter, ...) as
  subprocesses of the `gaudi` CLI with `--progress-jsonl`, one at a time with a queue, cancel and
  logs. A job's whole state lives on disk under `runs/_jobs/<id>/` (job.json, progress.jsonl,
  log.txt), so a page reload — or a studio restart — still shows it.
- `CatalogueTask`: work that must write the catalogue (sync, fetch images, import a folder).
  DuckDB allows one writing process, the studio's, so these run in a thread of the studio itself;
  their engine `Progress` records go to the process-wide progress JSONL and are read back here.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import progress as progress_mod
from .errors import GaudiError
from .fileio import atomic_write_text
from .workspace import Workspace

FINISHED = ("done", "failed", "cancelled", "interrupted")


@dataclass
class Step:
    """One `gaudi` CLI call of a job: `argv` excludes `--workspace`/`--progress-jsonl`."""
    name: str
    argv: list[str]
    status: str = "queued"  # queued | running | done | failed | cancelled | skipped
    returncode: int | None = None
    offset: int = 0  # where this step's records start in the job's progress.jsonl


@dataclass
class Job:
    id: str
    title: str
    steps: list[Step]
    status: str = "queued"  # queued | running | done | failed | cancelled | interrupted
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    current: int = 0
    error: str | None = None
    pid: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Job":
        d = dict(d)
        d["steps"] = [Step(**s) for s in d.get("steps", [])]
        return cls(**d)


@dataclass
class ProgressView:
    """What a UI shows about a job or task: a fraction, a line of text, metric rows."""
    fraction: float = 0.0
    stage: str = ""
    done: int = 0
    total: int | None = None
    metrics: list[dict] = field(default_factory=list)
    points: list[dict] = field(default_factory=list)  # progress records carrying a loss (live curve)
    logs: list[str] = field(default_factory=list)
    last: dict = field(default_factory=dict)


def read_progress(path: Path, offset: int = 0) -> ProgressView:
    """Fold a progress JSONL (from byte `offset`) into a ProgressView. Torn last lines are skipped."""
    view = ProgressView()
    if not path.exists():
        return view
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    for raw in data.splitlines():
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        ev = rec.get("event")
        if ev == "metric":
            view.metrics.append(rec)
        elif ev == "log":
            view.logs.append(f"[{rec.get('stage', '')}] {rec.get('message', '')}")
        elif ev in ("start", "progress", "end"):
            if ev == "progress" and isinstance(rec.get("loss"), (int, float)):
                view.points.append(rec)
            view.stage = rec.get("stage", view.stage)
            view.total = rec.get("total")
            view.done = rec.get("done", 0 if ev == "start" else view.done) or 0
            view.last = rec
            if rec.get("prelude"):  # counts shown, the fraction stays the main work's
                continue
            if view.total:
                view.fraction = min(1.0, view.done / view.total)
            elif ev == "end":
                view.fraction = 1.0
            elif ev == "start":
                view.fraction = 0.0
    return view


class JobManager:
    """Runs `gaudi` subprocesses one job at a time. Thread-safe; one per studio process."""

    def __init__(self, ws: Workspace, python: str | None = None, poll_s: float = 0.2):
        self.ws = ws
        self.root = ws.runs_dir / "_jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self.python = python or sys.executable
        self._poll_s = poll_s
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._jobs: dict[str, Job] = {}
        self._prepare: dict[str, Callable[[], None]] = {}
        self._proc: subprocess.Popen | None = None
        self._cancel_requested: set[str] = set()
        self._load()
        self._worker = threading.Thread(target=self._run_forever, name="gaudi-jobs", daemon=True)
        self._worker.start()

    # -- public ---------------------------------------------------------------------------
    def submit(self, title: str, steps: list[Step], prepare: Callable[[], None] | None = None) -> Job:
        """Queue a job. `prepare` runs in this process just before the first step (e.g. export
        the manifest from the catalogue, which the subprocesses must not open)."""
        if not steps:
            raise GaudiError("a job needs at least one step")
        job = Job(id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4], title=title, steps=steps)
        with self._lock:
            self._jobs[job.id] = job
            if prepare:
                self._prepare[job.id] = prepare
            self._save(job)
        self._wake.set()
        return job

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job, or interrupt the running one (SIGINT, then SIGTERM, SIGKILL)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status in FINISHED:
                return False
            self._cancel_requested.add(job_id)
            if job.status == "queued":
                self._finish(job, "cancelled")
                return True
            proc = self._proc
        if proc is not None:
            threading.Thread(target=_stop_process, args=(proc,), daemon=True).start()
        return True

    def shutdown(self) -> None:
        """Stop the running step's process (its own session: a Ctrl-C of the studio does not reach
        it) when the studio ends; the job is then found `interrupted` by the next studio."""
        with self._lock:
            proc, job = self._proc, self.running()
            if job is not None:
                self._cancel_requested.add(job.id)  # recorded as cancelled, not failed
        if proc is not None:
            _stop_process(proc)
            if job is not None:
                self._worker.join(5)  # let the worker record it

    def jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def running(self) -> Job | None:
        with self._lock:
            return next((j for j in self._jobs.values() if j.status == "running"), None)

    def queued(self) -> list[Job]:
        with self._lock:
            return sorted((j for j in self._jobs.values() if j.status == "queued"), key=lambda j: j.created)

    def job_dir(self, job: Job | str) -> Path:
        return self.root / (job if isinstance(job, str) else job.id)

    def progress(self, job: Job) -> ProgressView:
        """Progress of a job: the current step's fraction folded into the whole job's; metrics
        and loss points of all its steps."""
        path = self.job_dir(job) / "progress.jsonl"
        view = read_progress(path)
        if job.steps and job.steps[job.current].offset:
            cur = read_progress(path, job.steps[job.current].offset)
            view.fraction, view.stage, view.done, view.total, view.last = \
                cur.fraction, cur.stage, cur.done, cur.total, cur.last
        n = max(1, len(job.steps))
        step_frac = view.fraction
        finished_steps = sum(1 for s in job.steps if s.status in ("done", "skipped"))
        if job.status == "done":
            view.fraction = 1.0
        else:
            view.fraction = min(1.0, (finished_steps + (step_frac if job.status == "running" else 0)) / n)
        return view

    def log_tail(self, job: Job, lines: int = 40) -> str:
        path = self.job_dir(job) / "log.txt"
        if not path.exists():
            return ""
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
        # tqdm redraws with \r: keep the last state of each line
        out = [ln.rsplit("\r", 1)[-1] for ln in text.splitlines()]
        return "\n".join(out[-lines:])

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until a job finishes (for scripts and tests)."""
        t0 = time.time()
        while True:
            job = self.get(job_id)
            if job is None or job.status in FINISHED:
                return job
            if timeout is not None and time.time() - t0 > timeout:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout:.0f}s")
            time.sleep(0.1)

    # -- internals ------------------------------------------------------------------------
    def _load(self) -> None:
        for path in sorted(self.root.glob("*/job.json")):
            try:
                job = Job.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError):
                continue
            if job.status not in FINISHED:
                # Its server died: a queued job lost its prepare step, a running one its parent.
                job.status = "interrupted"
                job.error = "the studio stopped while this job was " + ("running" if job.started else "queued")
                job.ended = job.ended or time.time()
                self._save(job)
            self._jobs[job.id] = job

    def _save(self, job: Job) -> None:
        atomic_write_text(self.job_dir(job) / "job.json", json.dumps(asdict(job), indent=1))

    def _finish(self, job: Job, status: str, error: str | None = None) -> None:
        job.status = status
        job.error = error or job.error
        job.ended = time.time()
        job.pid = None
        for s in job.steps:
            if s.status in ("queued", "running"):
                s.status = "cancelled" if status == "cancelled" else "skipped"
        self._save(job)

    def _next(self) -> Job | None:
        q = self.queued()
        return q[0] if q else None

    def _run_forever(self) -> None:
        while True:
            job = self._next()
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._run(job)
            except Exception as exc:  # never let the worker die: record and go on
                with self._lock:
                    self._finish(job, "failed", f"{type(exc).__name__}: {exc}")

    def _run(self, job: Job) -> None:
        d = self.job_dir(job)
        log_path, jsonl = d / "log.txt", d / "progress.jsonl"
        with self._lock:
            if job.status != "queued":
                return
            job.status, job.started = "running", time.time()
            self._save(job)
            prepare = self._prepare.pop(job.id, None)
        if prepare:
            try:
                prepare()
            except Exception as exc:
                with self._lock:
                    self._finish(job, "failed", _one_line(exc))
                return
        for i, step in enumerate(job.steps):
            cmd = [self.python, "-m", "gaudi_engine", "--workspace", str(self.ws.root),
                   "--progress-jsonl", str(jsonl), *step.argv]
            with self._lock:
                if job.id in self._cancel_requested:
                    self._finish(job, "cancelled")
                    return
                job.current, step.status = i, "running"
                step.offset = jsonl.stat().st_size if jsonl.exists() else 0
                with open(log_path, "a", encoding="utf-8") as log:
                    log.write(f"$ gaudi {' '.join(step.argv)}\n")
                log = open(log_path, "ab")
                env = {**os.environ, "PYTHONUNBUFFERED": "1"}
                self._proc = subprocess.Popen(cmd, cwd=str(self.ws.root), stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, env=env, start_new_session=True)
                job.pid = self._proc.pid
                self._save(job)
            try:
                rc = self._proc.wait()
            finally:
                log.close()
            with self._lock:
                self._proc = None
                step.returncode = rc
                if job.id in self._cancel_requested:
                    step.status = "cancelled"
                    self._finish(job, "cancelled")
                    return
                if rc != 0:
                    step.status = "failed"
                    self._finish(job, "failed", f"{step.name} failed (exit {rc}): {_last_error_line(log_path)}")
                    return
                step.status = "done"
                self._save(job)
        with self._lock:
            self._finish(job, "done")


def _stop_process(proc: subprocess.Popen) -> None:
    """SIGINT first (the CLI marks its progress `cancelled`), then SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 5), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    return msg if isinstance(exc, GaudiError) else f"{type(exc).__name__}: {msg}"


def _last_error_line(log_path: Path) -> str:
    try:
        lines = [ln.rsplit("\r", 1)[-1].strip() for ln in log_path.read_text("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    for ln in reversed(lines):
        if "error" in ln.lower():
            return ln
    return lines[-1] if lines else ""


class CatalogueTask:
    """At most one in-process catalogue task at a time (sync, fetch, import...), in a thread.

    Stop: engine functions take no cancel flag, so the thread gets an asynchronous
    KeyboardInterrupt (which `Progress` records as `cancelled`; only Stop sends one to this thread). Every engine
    write is one transaction per page, rolled back on any exception, and syncs resume by
    themselves, so stopping between two bytecodes loses at most the page in flight.
    """

    def __init__(self, ws: Workspace):
        self.jsonl = ws.runs_dir / "_jobs" / "studio_tasks.jsonl"
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        progress_mod.set_default_jsonl(self.jsonl)  # engine Progress in this process writes here
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.name = ""
        self.status = "idle"  # idle | running | done | failed | cancelled
        self.message = ""
        self.result: Any = None
        self._offset = 0
        self.started: float | None = None

    def start(self, name: str, fn: Callable[[], Any]) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise GaudiError(f"'{self.name}' is still running: stop it or wait for it to finish")
            self.name, self.status, self.message, self.result = name, "running", "", None
            self._offset = self.jsonl.stat().st_size if self.jsonl.exists() else 0
            self.started = time.time()
            self._thread = threading.Thread(target=self._run, args=(fn,), name=f"task-{name}", daemon=True)
            self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            result = fn()
        except KeyboardInterrupt:
            self.status, self.message = "cancelled", "stopped by the user"
        except Exception as exc:
            self.status, self.message = "failed", _one_line(exc)
        else:
            self.status, self.result = "done", result
            self.message = _summary_line(result)

    def stop(self) -> bool:
        t = self._thread
        if t is None or not t.is_alive():
            return False
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(t.ident), ctypes.py_object(KeyboardInterrupt))
        return True

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def progress(self) -> ProgressView:
        view = read_progress(self.jsonl, self._offset) if self.started else ProgressView()
        if self.status == "done":
            view.fraction = 1.0
        return view


def _summary_line(result: Any) -> str:
    if isinstance(result, dict):
        parts = [f"{k}={v}" for k, v in result.items() if isinstance(v, (int, float, str)) and len(str(v)) < 40]
        return ", ".join(parts[:10])
    return "" if result is None else str(result)[:200]
