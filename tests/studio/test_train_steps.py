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
