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


def test_pseudo_mask_runs_finished_and_being_written(workspace):
    import json
    import socket

    from gaudi_engine.studio_views import pseudomask_runs, pseudomask_runs_in_progress

    def run(name, status, lines, pid=os.getpid(), index=False):
        d = workspace.runs_dir / name
        (d / "parts").mkdir(parents=True)
        (d / "parts" / "shard-0-of-1.jsonl").write_text("".join(f'{{"post_id": {i}}}\n' for i in range(lines)))
        if index:
            (d / "index.parquet").write_bytes(b"x")
        (d / "lineage.json").write_text(json.dumps({"status": status, "pid": pid, "host": socket.gethostname(),
                                                    "created": f"2026-01-0{lines}T00:00:00Z",
                                                    "expected": {"posts": 10}}))

    run("pseudomasks_v1", "done", 1, index=True)
    run("pseudomasks_v1-002", "running", 4)  # this process stands for the writer
    run("pseudomasks_v1-003", "running", 3, pid=999_999_999)  # its writer is gone: not in progress
    assert pseudomask_runs(workspace) == ["pseudomasks_v1"]
    assert pseudomask_runs_in_progress(workspace) == [("pseudomasks_v1-002", 4, 10)]
    with open(workspace.runs_dir / "pseudomasks_v1-002" / "parts" / "shard-0-of-1.jsonl", "a") as fh:
        fh.write('{"post_id": 9}\n')
    assert pseudomask_runs_in_progress(workspace) == [("pseudomasks_v1-002", 5, 10)]
    rows = {r["run"]: r for r in list_runs(workspace)}
    assert rows["pseudomasks_v1-002"]["status"] == "running 5/10"
    assert rows["pseudomasks_v1-003"]["status"] == "interrupted"


def test_pickers_default_to_the_newest_finished_run(workspace):
    import json

    _run(workspace, "align_s1", ["model.pt"], 1_000)
    _run(workspace, "align_s1-002", ["model.pt", "last.pt"], 2_000)  # cancelled after an epoch
    (workspace.runs_dir / "align_s1-002" / "lineage.json").write_text(json.dumps({"status": "cancelled"}))
    assert checkpoints(workspace, "align") == ["runs/align_s1/checkpoints/model.pt",
                                               "runs/align_s1-002/checkpoints/model.pt"]
