"""`gaudi train-align` runs unchanged under `torchrun --nproc_per_node 2` on CPU (gloo)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gaudi_engine import synth
from gaudi_engine.models.checkpoint import load_align

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_torchrun_two_cpu_processes(tmp_path):
    synth.generate(tmp_path / "data", 24, seed=1, size=(64, 80), write_gt=False)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    prog = tmp_path / "progress.jsonl"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "gaudi_engine",
           "--workspace", str(tmp_path), "--progress-jsonl", str(prog), "train-align",
           "--manifest", str(tmp_path / "data" / "manifest.csv"),
           "--tag-desc", str(tmp_path / "data" / "tag_descriptions.json"), "--out", "runs/ddp",
           "--model", "gaudi-tiny", "--image-size", "64", "--epochs", "2", "--batch-size", "8",
           "--log-every", "1", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("train-align:") == 1, proc.stdout  # rank 0 reports, once
    run = tmp_path / "runs" / "ddp"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["world_size"] == 2
    # 24 images over 2 ranks, 4 per rank per step: 3 steps an epoch, logged once each (rank 0)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == [1, 2, 3, 4, 5, 6]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["ranks_in_sync"] is True  # gradients were averaged: both ranks ended equal
    b = load_align(run / "checkpoints" / "model.pt")
    assert b.config["step"] == 6 and b.config["epoch"] == 1 and len(b.vocab) > 5
    starts = [json.loads(x) for x in prog.read_text().splitlines()]
    for stage in ("train-align", "load-images"):  # one progress stream, from rank 0
        assert sum(e["event"] == "start" and e["stage"] == stage for e in starts) == 1, stage
