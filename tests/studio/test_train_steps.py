"""The Train tab's buttons map to the documented `gaudi` CLI calls (DESIGN §3)."""
from __future__ import annotations

from studio.tabs.train import pipeline_steps, supported_flags


def test_run_all_chains_the_pipeline_with_only_flags_the_cli_accepts():
    k = {"model": "gaudi-tiny", "pretrained": "", "image_size": 64, "epochs": 2, "batch_size": 8, "device": "cpu"}
    steps = pipeline_steps("Run all", k)
    assert [s.name for s in steps] == ["Stage A", "Pseudo-labels v1", "Stage B", "Pseudo-labels v2",
                                       "Stage B round 2"]
    for s in steps:
        flags = supported_flags(s.argv[0])
        assert flags, f"gaudi {s.argv[0]} is not a command"
        assert all(a in flags for a in s.argv[1:] if a.startswith("--")), s.argv
        assert s.argv[s.argv.index("--manifest") + 1] == "data/manifest.csv"
    b2 = steps[4].argv
    assert b2[b2.index("--pseudomasks") + 1] == "runs/pseudomasks_v2"
    assert b2[b2.index("--init-from") + 1] == "runs/seg_s1/checkpoints/model.pt"  # self-training
    p2 = steps[3].argv
    assert p2[p2.index("--segmenter-ckpt") + 1] == "runs/seg_s1/checkpoints/model.pt"
    stage_b = steps[2].argv
    assert stage_b[stage_b.index("--epochs") + 1] == "2" and "--model" not in stage_b


def test_empty_knobs_are_left_to_the_commands_defaults():
    steps = pipeline_steps("Stage B", {"model": "gaudi-lite0", "pretrained": "", "image_size": None,
                                       "epochs": None, "batch_size": None, "device": None})
    assert steps[0].argv == ["train-segmenter", "--manifest", "data/manifest.csv", "--tag-desc",
                             "data/tag_descriptions.json", "--pseudomasks", "runs/pseudomasks_v1",
                             "--out", "runs/seg_s1"]


def _finished(ws, name: str, created: str, inputs: dict | None = None) -> None:
    import json

    d = ws.runs_dir / name
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "model.pt").write_bytes(b"x")
    (d / "index.parquet").write_bytes(b"x")
    (d / "lineage.json").write_text(json.dumps({"status": "done", "created": created, "inputs": inputs or {}}))


def test_each_launch_writes_new_runs_from_the_newest_finished_inputs(workspace):
    import pytest

    from gaudi_engine.errors import GaudiError

    k = {"model": "gaudi-tiny", "epochs": 1}
    with pytest.raises(GaudiError, match="no finished align_s1 checkpoint yet: run Stage A first"):
        pipeline_steps("Pseudo-labels v1", k, workspace)
    _finished(workspace, "align_s1", "2026-01-01T00:00:00Z")
    _finished(workspace, "align_s1-002", "2026-01-02T00:00:00Z")
    a = pipeline_steps("Stage A", k, workspace)[0].argv
    assert a[a.index("--out") + 1] == "runs/align_s1-003"
    p1 = pipeline_steps("Pseudo-labels v1", k, workspace)[0].argv
    assert p1[p1.index("--align-ckpt") + 1] == "runs/align_s1-002/checkpoints/model.pt"
    assert p1[p1.index("--out") + 1] == "runs/pseudomasks_v1"
    # round 2 reads s1 with the Stage A its pseudo-masks were made from, not a newer one
    _finished(workspace, "pseudomasks_v1", "2026-01-03T00:00:00Z",
              {"align_ckpt": {"path": "runs/align_s1/checkpoints/model.pt", "run": "align_s1"}})
    _finished(workspace, "seg_s1", "2026-01-04T00:00:00Z", {"pseudomasks": {"path": "runs/pseudomasks_v1",
                                                                           "run": "pseudomasks_v1"}})
    p2, b2 = pipeline_steps("Round 2", k, workspace)
    assert p2.argv[p2.argv.index("--align-ckpt") + 1] == "runs/align_s1/checkpoints/model.pt"
    assert p2.argv[p2.argv.index("--segmenter-ckpt") + 1] == "runs/seg_s1/checkpoints/model.pt"
    assert b2.argv[b2.argv.index("--pseudomasks") + 1] == p2.argv[p2.argv.index("--out") + 1] == "runs/pseudomasks_v2"
    # Run all chains its own new runs
    steps = pipeline_steps("Run all", k, workspace)
    b = steps[2].argv
    assert b[b.index("--pseudomasks") + 1] == "runs/pseudomasks_v1-002" and b[b.index("--out") + 1] == "runs/seg_s1-002"
    a = steps[1].argv
    assert a[a.index("--align-ckpt") + 1] == "runs/align_s1-003/checkpoints/model.pt"


def test_the_progress_line_names_the_step_never_a_bare_0_of_unknown():
    from gaudi_engine.jobs import ProgressView
    from studio.tabs.train import step_text

    assert step_text(ProgressView()) == "starting"
    assert step_text(ProgressView(stage="calibrate-floors", done=40, total=96)) == "calibrate-floors 40/96"
    assert step_text(ProgressView(stage="load-models")) == "load-models"
