"""The Train tab's "Run all" as the studio runs it: the five `gaudi` subprocesses of one job, from
a catalogue the studio process holds, end with a segmenter of round 2 that infers masks."""
from __future__ import annotations

import json

from gaudi_engine import synth
from gaudi_engine.booru.folder_import import import_folder
from gaudi_engine.catalogue import open_catalogue
from gaudi_engine.catalogue.manifest import export_manifest
from gaudi_engine.jobs import JobManager
from gaudi_engine.text.descriptions import export_json, import_json
from gaudi_engine.workspace import Workspace
from studio.tabs.train import MANIFEST, TAG_DESC, pipeline_steps


def test_run_all_job_runs_every_stage_to_the_end(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    # 24 scenes, batches of 8: Stage A still takes 36 steps (12 epochs x 3), enough for pseudolabels
    # to accept masks (~88/135 in round 1), which Stage B needs; Stage B's 2 epochs (seg_epochs)
    # are enough to write its checkpoints: what this test checks is that all five steps run
    src = synth.generate(tmp_path / "src", 24, seed=0, size=(64, 80))
    cat = open_catalogue(ws.catalogue_path)  # held open, as the studio holds it
    assert not import_folder(ws, cat, tmp_path / "src" / "images")["errors"]
    import_json(cat, src["tag_descriptions"])

    def prepare() -> None:  # what the Train tab does before the first step
        export_manifest(ws, cat, ws.resolve(MANIFEST))
        export_json(cat, ws.resolve(TAG_DESC))

    knobs = {"model": "gaudi-tiny", "pretrained": "", "image_size": 64, "epochs": 12, "seg_epochs": 2,
             "batch_size": 8, "device": "cpu"}
    jobs = JobManager(ws)
    job = jobs.submit("Run all", pipeline_steps("Run all", knobs), prepare=prepare)
    job = jobs.wait(job.id, timeout=900)
    assert job.status == "done", (job.error, jobs.log_tail(job))
    assert [s.status for s in job.steps] == ["done"] * 5
    for run in ("align_s1", "seg_s1", "seg_s2"):
        assert (ws.runs_dir / run / "checkpoints" / "model.pt").exists(), run
        assert (ws.runs_dir / run / "checkpoints" / "last.pt").exists(), run  # --resume's
    for run in ("pseudomasks_v1", "pseudomasks_v2"):
        assert (ws.runs_dir / run / "index.parquet").exists(), run
    assert jobs.progress(job).fraction == 1.0

    from gaudi_engine.infer import Predictor

    pred = Predictor(segmenter_ckpt=ws.runs_dir / "seg_s2" / "checkpoints" / "model.pt")
    image = synth.render_scene(11, 72)[0]
    result = pred.predict(image, ["sky", "grass"])
    assert [t["tag"] for t in result["tags"]] == ["sky", "grass"]
    json.dumps(result)  # the DESIGN §3 JSON is serialisable as is
    cat.close()
