"""First visit (issue 16): a demo studio launched on a workspace that has posts but no model trains
the demo model by itself — no click — shows its progress in the Playground and the Train tab, and
the Playground segments once its Stage A lands. A second launch reuses it. Its own small studio
(a tiny schedule), so the main browser suite's studio keeps its empty catalogue."""
from __future__ import annotations

import json
import time

import pytest

from gaudi_engine.jobs import read_progress

from .conftest import ARTIFACTS, copy_sample, running_studio, shot

TINY_SCHEDULE = {"model": "gaudi-tiny", "image_size": 64, "batch_size": 8, "align_epochs": 12, "seg_epochs": 1}


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory):
    from gaudi_engine.demo import build_demo
    from gaudi_engine.workspace import Workspace

    ws = tmp_path_factory.mktemp("first_visit") / "ws"
    build_demo(Workspace(ws), n=16, size=(64, 80))  # posts, images, tags and descriptions synced
    (ws.parent / "schedule.json").write_text(json.dumps(TINY_SCHEDULE))
    return ws


def _jobs(ws):
    return [json.loads(p.read_text()) for p in sorted((ws / "runs" / "_jobs").glob("*/job.json"))]


def test_the_demo_model_trains_itself_and_the_playground_segments(browser, demo_ws, tmp_path):
    schedule = str(demo_ws.parent / "schedule.json")
    with running_studio(demo_ws, "--demo-model-config", schedule, log_name="studio_first_visit.log") as url:
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        try:
            page.goto(url)
            page.wait_for_selector("#sync-gallery")
            # the job was queued at launch, with no click
            jobs = _jobs(demo_ws)
            assert [j["title"] for j in jobs] == ["Demo model"]
            assert [s["name"] for s in jobs[0]["steps"]] == ["Stage A", "Pseudo-labels v1", "Stage B"]
            page.get_by_role("tab", name="Playground", exact=True).click()
            hint = page.locator("#pg-hint")
            # the Playground says the demo model is training (unless Stage A already landed)
            page.wait_for_function(
                "(() => { const h = document.querySelector('#pg-hint'); const b = document.querySelector('#pg-run');"
                " return (h && h.innerText.includes('demo model is training')) || (b && !b.disabled); })()",
                timeout=60_000)
            shot(page, "first_visit_training")
            if "demo model" in hint.inner_text():
                assert page.locator("#pg-run").is_disabled()
            # Segment is enabled by itself when Stage A lands (the page follows the job)
            page.wait_for_function("!document.querySelector('#pg-run').disabled", timeout=240_000)
            sample = copy_sample(demo_ws, tmp_path / "scene.png")
            page.locator("#pg-image input[type=file]").set_input_files(str(sample))
            tags = page.locator("#pg-tags input")
            for t in ("sky", "grass"):
                tags.fill(t)
                tags.press("Enter")
            page.locator("#pg-run").click()
            page.wait_for_function("document.querySelectorAll('#pg-table .virtual-row').length == 2",
                                   timeout=120_000)
            shot(page, "first_visit_masks")
            table = page.locator("#pg-table").inner_text()
            assert "sky" in table and "grass" in table
            # the whole job lands: Stage A, pseudo-masks v1 and a Stage B run, each at 100 %
            t0 = time.time()
            while _jobs(demo_ws)[0]["status"] in ("queued", "running") and time.time() - t0 < 300:
                time.sleep(1)
            job = _jobs(demo_ws)[0]
            assert job["status"] == "done", (job.get("error"), (ARTIFACTS / "studio_first_visit.log").read_text()[-1500:])
            assert read_progress(demo_ws / "runs" / "_jobs" / job["id"] / "progress.jsonl").fraction == 1.0
            for run in ("align_s1", "pseudomasks_v1", "seg_s1"):
                assert (demo_ws / "runs" / run / "lineage.json").exists(), run
        finally:
            page.context.close()
    # a later launch reuses the demo model: no second job
    with running_studio(demo_ws, "--demo-model-config", schedule, log_name="studio_first_visit2.log"):
        assert [j["title"] for j in _jobs(demo_ws)] == ["Demo model"]
    assert "demo model: not started, a Stage A run exists" in (ARTIFACTS / "studio_first_visit2.log").read_text()
