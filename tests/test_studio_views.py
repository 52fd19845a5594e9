"""The studio's checkpoint pickers and runs table: model.pt is the checkpoint to use; a last.pt
beside it is resume state (left out of the pickers, marked in the table); a run from before
model.pt existed is picked by its last.pt."""
import os

from gaudi_engine.studio_views import checkpoints, latest_checkpoint, list_runs


def _run(ws, name, files, mtime):
    d = ws.runs_dir / name / "checkpoints"
    d.mkdir(parents=True)
    for f in files:
        (d / f).write_bytes(b"x")
    os.utime(ws.runs_dir / name, (mtime, mtime))


def test_pickers_prefer_model_pt(workspace):
    _run(workspace, "align_old", ["last.pt"], 1_000)  # before model.pt existed
    _run(workspace, "align_new", ["last.pt", "model.pt", "epoch3.pt"], 2_000)
    _run(workspace, "seg_s1", ["model.pt", "last.pt"], 3_000)
    assert checkpoints(workspace, "align") == ["runs/align_new/checkpoints/model.pt",
                                               "runs/align_new/checkpoints/epoch3.pt",
                                               "runs/align_old/checkpoints/last.pt"]
    assert latest_checkpoint(workspace, "seg") == "runs/seg_s1/checkpoints/model.pt"
    rows = {r["run"]: r["checkpoints"] for r in list_runs(workspace)}
    assert rows["seg_s1"] == "runs/seg_s1/checkpoints/model.pt, runs/seg_s1/checkpoints/last.pt (resume)"
    assert rows["align_old"] == "runs/align_old/checkpoints/last.pt"
