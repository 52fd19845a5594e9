"""The demo model: on a demo studio's first launch, with no click, a "Demo model" job runs the
pipeline (Stage A, pseudo-labels v1, Stage B) on the demo workspace with a short schedule, so a
first-time visitor sees masks within minutes instead of a tab that says "no checkpoint". It is an
ordinary Train-tab job (JobManager, `pipeline_steps`), so its progress, log, loss and runs show
where every other job's do. Later launches find its finished Stage A and start nothing."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from gaudi_engine.errors import GaudiError
from gaudi_engine.jobs import Job
from gaudi_engine.runs import ALIGN, latest_run

from .state import StudioState

DEMO_MODEL = "Demo model"
FIRST_MASKS_STAGE = "Stage A"  # the Playground segments (CAM masks) once this step's run lands


@dataclass(frozen=True)
class DemoSchedule:
    """The demo model's short schedule. Stage A is the step a visitor waits for (the Playground
    works from its checkpoint alone), so it is kept short enough to land within a few minutes on
    2 cores at the demo's size; pseudo-labels and Stage B then improve the masks behind it."""
    model: str = "gaudi-lite0"
    align_epochs: int = 8
    seg_epochs: int = 4
    image_size: int | None = None   # None: the model's own input size
    batch_size: int | None = None   # None: each command's default
    device: str = "cpu"

    @classmethod
    def from_file(cls, path: str | Path) -> "DemoSchedule":
        """A JSON object with any of the fields (the rest keep their defaults)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise GaudiError(f"demo model config {path}: {exc}") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            extra = sorted(set(data) - known) if isinstance(data, dict) else "not an object"
            raise GaudiError(f"demo model config {path}: unknown fields {extra} (known: {sorted(known)})")
        return cls(**data)

    def knobs(self) -> dict:
        """The `k` of `pipeline_steps`."""
        return {"model": self.model, "epochs": self.align_epochs, "seg_epochs": self.seg_epochs,
                "image_size": self.image_size, "batch_size": self.batch_size, "device": self.device}


def demo_model_job(state: StudioState) -> Job | None:
    """The Demo model job still queued or running, if any."""
    return next((j for j in state.jobs.jobs() if j.title == DEMO_MODEL and j.status in ("queued", "running")), None)


def why_not_start(state: StudioState) -> str | None:
    """None when the demo model should be trained now; else why not (one line, for the log)."""
    from gaudi_engine.catalogue.queries import counts

    if state.demo_booru is None:
        return "not a demo studio"
    if latest_run(state.ws, ALIGN) is not None:
        return "a Stage A run exists (the demo model, or the user's)"
    if demo_model_job(state) is not None:
        return "the demo model job is already queued"
    if not counts(state.cat)["media"]["ok"]:
        return "no post has its image yet (sync first)"
    return None


def start_demo_model(state: StudioState, schedule: DemoSchedule | None = None) -> tuple[Job | None, str]:
    """Queue the Demo model job when the studio has no model of its own yet. (job or None, and
    one line saying what happened, for the launch output)."""
    from .tabs.train import submit_pipeline

    reason = why_not_start(state)
    if reason is not None:
        return None, f"demo model: not started, {reason}"
    schedule = schedule or DemoSchedule()
    job = submit_pipeline(state, DEMO_MODEL, schedule.knobs())
    return job, (f"demo model: training in the background (job {job.id}, Train tab; {json.dumps(asdict(schedule))}); "
                 f"the Playground segments when its Stage A lands")


def training_line(state: StudioState, waiting_for: str) -> str | None:
    """"The demo model is training: 37 % (Stage A 2/3)…" while the job runs; None otherwise.
    `waiting_for` says what this page shows when it lands."""
    job = demo_model_job(state)
    if job is None:
        return None
    if job.status == "queued":
        return f"The demo model is about to train; {waiting_for} when it lands."
    view = state.jobs.progress(job)
    step = job.steps[job.current].name if job.steps else ""
    detail = f"{step} {view.done}/{view.total}" if view.total else step
    return (f"The demo model is training: **{view.fraction * 100:.0f} %** ({detail}, step {job.current + 1} "
            f"of {len(job.steps)}); {waiting_for} when it lands. Follow it in the Train tab.")
