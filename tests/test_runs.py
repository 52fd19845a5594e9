"""Runs never overwrite each other: a launch without --out makes a new numbered run, an explicit
--out that holds a trained run is refused unless --resume or --overwrite, every run records what
it was made from (lineage.json: paths + sha256, settings, times; no secrets), the newest finished
run of a kind is what later stages read, and deleting a run is an explicit command."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gaudi_engine import runs
from gaudi_engine.cli import main
from gaudi_engine.errors import GaudiError
from gaudi_engine.lineage import public_config, read_lineage, sha256_file

TINY = ["--model", "gaudi-tiny", "--image-size", "64", "--batch-size", "8", "--epochs", "1", "--max-steps", "1",
        "--device", "cpu"]


def _lineage(ws, name: str, **fields) -> None:
    d = ws.runs_dir / name
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "model.pt").write_bytes(b"x")
    (d / "lineage.json").write_text(json.dumps({"command": "train-align", "host": None, **fields}))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_names_kinds_and_the_newest_finished_run(workspace):
    assert runs.new_run_name(workspace, "align_s1") == "align_s1"
    _lineage(workspace, "align_s1", status="done", created="2026-01-01T00:00:00Z")
    assert runs.new_run_name(workspace, "align_s1") == "align_s1-002"
    _lineage(workspace, "align_s1-002", status="running", pid=_dead_pid(), created="2026-01-02T00:00:00Z")
    _lineage(workspace, "align_s1-003", status="running", pid=os.getpid(), created="2026-01-03T00:00:00Z")
    assert runs.new_run_name(workspace, "align_s1") == "align_s1-004"
    assert (runs.kind_of("align_s1-003"), runs.family_of("pseudomasks_v2-002")) == ("align_s1", "pseudomasks")
    by_name = {r.name: r.status for r in runs.list_runs(workspace)}
    assert by_name == {"align_s1": "done", "align_s1-002": "interrupted", "align_s1-003": "running"}
    assert [r.name for r in runs.list_runs(workspace)] == ["align_s1-003", "align_s1-002", "align_s1"]
    assert runs.latest_run(workspace, "align_s1").name == "align_s1"  # the newest *finished* one
    assert runs.latest_run(workspace, "align_s1", finished=False).name == "align_s1-003"
    assert runs.latest_checkpoint_of(workspace, "align_s1") == "runs/align_s1/checkpoints/model.pt"
    with pytest.raises(GaudiError, match="being written"):
        runs.delete_run(workspace, "align_s1-003")
    with pytest.raises(GaudiError, match="not a run"):
        runs.delete_run(workspace, "../data")


def test_a_labelling_rerun_needs_the_same_inputs(workspace):
    out = workspace.runs_dir / "pseudomasks_v1"
    out.mkdir(parents=True)
    (out / "parts").mkdir()
    (out / "parts" / "shard-0-of-1.jsonl").write_text('{"post_id": 1, "rows": []}\n')
    same = {"align_ckpt": {"path": "a.pt", "sha256": "aa"}, "manifest": {"path": "m.csv", "sha256": "mm"}}
    (out / "lineage.json").write_text(json.dumps({"status": "done", "inputs": same, "config": {"pseudo": {"k": [1]}}}))
    runs.prepare_labelling_out(workspace, out, same, {"pseudo": {"k": (1,)}}, overwrite=False)  # goes on
    other = {**same, "align_ckpt": {"path": "a.pt", "sha256": "bb"}}
    with pytest.raises(GaudiError, match=r"other inputs \(align_ckpt differ"):
        runs.prepare_labelling_out(workspace, out, other, {"pseudo": {"k": [1]}}, overwrite=False)
    with pytest.raises(GaudiError, match="settings differ"):
        runs.prepare_labelling_out(workspace, out, same, {"pseudo": {"k": [2]}}, overwrite=False)
    runs.prepare_labelling_out(workspace, out, other, {"pseudo": {"k": [1]}}, overwrite=True)
    assert out.is_dir() and not any(out.iterdir())


def test_two_launches_make_two_runs_with_their_lineage(tmp_path, capsys):
    from gaudi_engine import synth

    info = synth.generate(tmp_path / "data", 6, seed=1, size=(64, 80))
    common = ["--workspace", str(tmp_path), "train-align", "--manifest", info["manifest"],
              "--tag-desc", info["tag_descriptions"], *TINY]
    assert main(common) == 0 and main(common) == 0
    first, second = tmp_path / "runs" / "align_s1", tmp_path / "runs" / "align_s1-002"
    for run in (first, second):
        lin = read_lineage(run)
        assert lin["status"] == "done" and lin["created"] <= lin["finished"]
        assert lin["inputs"]["manifest"] == {"path": "data/manifest.csv", "sha256": sha256_file(info["manifest"])}
        assert lin["inputs"]["tag_desc"]["sha256"] == sha256_file(info["tag_descriptions"])
        assert lin["config"]["model"] == "gaudi-tiny" and lin["config"]["max_steps"] == 1
    # an explicit --out holding a trained run is refused, the run untouched
    sha = sha256_file(first / "checkpoints" / "model.pt")
    capsys.readouterr()
    assert main([*common, "--out", "runs/align_s1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sha256_file(first / "checkpoints" / "model.pt") == sha
    assert main([*common, "--out", "runs/align_s1", "--overwrite"]) == 0
    # --resume without --out goes on in the newest run (align_s1, made anew just now), in its folder
    assert main(["--workspace", str(tmp_path), "train-align", "--resume", "--device", "cpu"]) == 0
    assert len(read_lineage(first)["resumed"]) == 1 and "resumed" not in read_lineage(second)
    assert not (tmp_path / "runs" / "align_s1-003").exists()
    capsys.readouterr()
    assert main(["--workspace", str(tmp_path), "runs", "list"]) == 0
    listed = capsys.readouterr().out
    assert "align_s1-002" in listed and "manifest.csv @" + sha256_file(info["manifest"])[:8] in listed
    assert main(["--workspace", str(tmp_path), "runs", "delete", "align_s1-002"]) == 0
    assert not second.exists() and first.exists()


def test_secrets_are_not_recorded():
    assert public_config({"api_key": "sk-1", "auth": "u:p", "epochs": 2, "path": "x"}) == {"epochs": 2, "path": "x"}
