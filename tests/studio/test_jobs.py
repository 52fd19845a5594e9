"""JobManager (gaudi subprocesses, queue, cancel, persistence) and CatalogueTask (in-process)."""
from __future__ import annotations

import json
import time

import pytest

from gaudi_engine.errors import GaudiError
from gaudi_engine.jobs import CatalogueTask, JobManager, Step, read_progress
from gaudi_engine.progress import Progress
from gaudi_engine.workspace import Workspace

TINY_DEMO = ["demo", "--n", "6", "--size", "32", "40", "--seed", "3"]


def test_job_runs_steps_in_order_and_reports_progress(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    jm = JobManager(ws)
    calls = []
    job = jm.submit("demo twice", [Step("build", TINY_DEMO), Step("stats", ["stats"])],
                    prepare=lambda: calls.append("prepared"))
    second = jm.submit("queued behind", [Step("stats", ["stats"])])
    assert jm.get(second.id).status == "queued"
    done = jm.wait(job.id, timeout=120)
    assert done.status == "done", (done.error, jm.log_tail(done))
    assert calls == ["prepared"]
    assert [s.status for s in done.steps] == ["done", "done"]
    assert [s.returncode for s in done.steps] == [0, 0]
    assert jm.progress(done).fraction == 1.0
    # the subprocess wrote real progress records to the job's JSONL
    view = read_progress(jm.job_dir(done) / "progress.jsonl")
    assert view.stage and view.done > 0
    assert "$ gaudi demo" in jm.log_tail(done)
    # `gaudi demo` synced the 6 scenes from its local booru: posts, images, wiki, descriptions
    info = json.loads((ws.root / "demo.json").read_text())
    assert info["counts"]["posts"] == 6 and info["counts"]["media"]["ok"] == 6
    assert info["counts"]["descriptions"] > 0 and info["counts"]["wiki_pages"] > 0
    assert jm.wait(second.id, timeout=60).status == "done"
    # state on disk: a new manager (a studio restart) lists the same jobs
    again = JobManager(ws)
    assert {j.id: j.status for j in again.jobs()} == {job.id: "done", second.id: "done"}


def test_failed_step_reports_one_line_and_skips_the_rest(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    jm = JobManager(ws)
    job = jm.submit("bad", [Step("bad demo", ["demo", "--n", "0"]), Step("never", ["stats"])])
    done = jm.wait(job.id, timeout=60)
    assert done.status == "failed"
    assert "--n must be at least 1" in done.error and "exit 2" in done.error
    assert [s.status for s in done.steps] == ["failed", "skipped"]


def test_prepare_error_fails_the_job_visibly(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    jm = JobManager(ws)

    def prepare():
        raise GaudiError("no post has its image on disk yet")

    done = jm.wait(jm.submit("x", [Step("stats", ["stats"])], prepare=prepare).id, timeout=30)
    assert done.status == "failed" and done.error == "no post has its image on disk yet"


def test_cancel_running_and_queued_jobs(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    jm = JobManager(ws)
    serving = jm.submit("serve forever", [Step("serve", TINY_DEMO + ["--serve"])])
    queued = jm.submit("waits", [Step("stats", ["stats"])])
    t0 = time.time()
    while "demo booru at" not in jm.log_tail(serving) and time.time() - t0 < 60:
        time.sleep(0.2)
    assert jm.get(serving.id).status == "running"
    assert jm.cancel(queued.id)
    assert jm.get(queued.id).status == "cancelled"
    assert jm.cancel(serving.id)
    done = jm.wait(serving.id, timeout=30)
    assert done.status == "cancelled" and done.steps[0].status == "cancelled"
    assert not jm.cancel(serving.id)  # already finished


def test_jobs_of_a_dead_studio_show_as_interrupted(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    d = ws.runs_dir / "_jobs" / "20260101-000000-abcd"
    d.mkdir(parents=True)
    (d / "job.json").write_text(json.dumps({"id": d.name, "title": "Run all", "status": "running",
                                            "steps": [{"name": "Stage A", "argv": ["stats"], "status": "running"}],
                                            "created": 1.0, "started": 2.0}))
    job = JobManager(ws).get(d.name)
    assert job.status == "interrupted" and "stopped while this job was running" in job.error


def test_catalogue_task_progress_result_failure_and_stop(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    task = CatalogueTask(ws)

    def work():
        with Progress("unit", total=5) as p:
            for _ in range(5):
                p.update()
        return {"stored": 5}

    task.start("work", work)
    task.join(10)
    assert task.status == "done" and task.result == {"stored": 5} and "stored=5" in task.message
    view = task.progress()
    assert view.fraction == 1.0 and view.stage == "unit" and view.done == 5

    def bad():
        raise GaudiError("cannot reach http://x: connection refused")

    task.start("bad", bad)
    task.join(10)
    assert task.status == "failed" and task.message == "cannot reach http://x: connection refused"

    def forever():
        with Progress("loop", total=None) as p:
            while True:
                p.update()
                time.sleep(0.01)

    task.start("loop", forever)
    time.sleep(0.2)
    with pytest.raises(GaudiError, match="still running"):
        task.start("other", work)
    assert task.stop()
    task.join(10)
    assert not task.running and task.status == "cancelled"
    # the engine's Progress saw a KeyboardInterrupt: its end record says cancelled
    assert read_progress(task.jsonl, 0).last.get("status") == "cancelled"
