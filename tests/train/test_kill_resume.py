"""`gaudi train-align` and `gaudi train-segmenter` killed with SIGKILL mid-epoch and resumed with
`--resume`: the run goes on from its last checkpoint (not from step 0), ends with the weights of an
uninterrupted run, its metrics log holds every step once, and no temp file is left behind; one
killed before its first checkpoint starts again without --resume."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import torch

from gaudi_engine import synth
from gaudi_engine.models.checkpoint import load_align, load_checkpoint
from gaudi_engine.models.segmenter import load_segmenter
from gaudi_engine.train.align import train_align
from gaudi_engine.train.segmenter import train_segmenter
from tests.conftest import run_gaudi_cmd
from tests.killing import jsonl_records, leftover_temp_files, sigkill_when

EPOCHS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill_train")
    info = synth.generate(root / "data", 48, seed=0, size=(64, 96), write_gt=True)
    return root, info


def _after_first_epoch(run, and_a_step: bool):
    """Ready to kill: epoch 0's checkpoint is written (its record follows the checkpoint) and, with
    `and_a_step`, epoch 1 has logged a step too (the kill lands inside epoch 1)."""
    def ready() -> bool:
        recs = jsonl_records(run / "metrics.jsonl")
        return any("epoch_loss" in r for r in recs) and (
            not and_a_step or any(r.get("epoch") == 1 and "loss" in r for r in recs))
    return ready


def _kill_then_resume(args, resume_args, run, tmp_path, inside_epoch: bool) -> tuple[int, str, str, dict]:
    """SIGKILL the run after its first checkpoint, then --resume it; also returns where the killed
    run's last.pt stood (the resumed run must go on from there)."""
    sigkill_when(args, _after_first_epoch(run, inside_epoch), log=tmp_path / "killed.log")
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    saved = {"step": last["step"], "next_epoch": last["epoch"] + (0 if last.get("batches_in_epoch") else 1)}
    assert saved["step"] < EPOCHS * 3, "killed after its last step: nothing left to resume"
    rc, out, err = run_gaudi_cmd(*resume_args, timeout=180)
    return rc, out, err, saved


def _assert_resumed(run, prog, stage: str, saved: dict, steps_per_epoch: int, log_every: int) -> None:
    """The rerun started after the saved checkpoint, and the log holds each step and epoch once."""
    total = EPOCHS * steps_per_epoch
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == EPOCHS - 1 and last["step"] == total
    metrics = jsonl_records(run / "metrics.jsonl")
    logged = [s for s in range(1, total + 1) if s % log_every == 0 or s == total]
    assert [r["step"] for r in metrics if "loss" in r] == logged
    assert [r["epoch"] for r in metrics if "epoch_loss" in r] == list(range(EPOCHS))
    # the resumed run's own progress: it begins at the saved step, not at step 0
    events = [r for r in jsonl_records(prog) if r["stage"] == stage]
    first = next(r for r in events if r["event"] == "progress")
    assert first["done"] == saved["step"], (first, saved)
    assert [r["epoch"] for r in events if "epoch_loss" in r] == list(range(saved["next_epoch"], EPOCHS))
    assert leftover_temp_files(run) == []


def _in_background(train, *args, **kwargs) -> Future:
    """Start the uninterrupted reference run (`train(*args, **kwargs)`, in this process, one torch
    thread as the `gaudi` subprocesses) in a thread, so that it trains on the second core while the
    test kills and resumes its subprocess; `.result()` waits for it (and raises its error)."""
    def run():
        torch.set_num_threads(1)
        return train(*args, **kwargs)

    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(run)
    pool.shutdown(wait=False)
    return future


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.allclose(v.float(), b[k].float(), atol=1e-5), k


def test_train_align_sigkill_then_resume(data, tmp_path):
    root, info = data
    run, prog = tmp_path / "runs" / "a", tmp_path / "resume_progress.jsonl"
    args = ["--workspace", tmp_path, "train-align", "--manifest", info["manifest"], "--tag-desc",
            info["tag_descriptions"], "--out", run, "--model", "gaudi-tiny", "--image-size", "64",
            "--epochs", EPOCHS, "--batch-size", "16", "--log-every", "1", "--device", "cpu", "--threads", "1",
            "--save-minutes", "0.00001"]  # last.pt after every step: the kill lands inside an epoch
    straight = _in_background(train_align, info["manifest"], info["tag_descriptions"], tmp_path / "straight",
                              model_name="gaudi-tiny", image_size=64, epochs=EPOCHS, batch_size=16, device="cpu",
                              log_every=1)
    rc, out, err, saved = _kill_then_resume(
        args, ["--workspace", tmp_path, "--progress-jsonl", prog, "train-align", "--out", run, "--resume",
               "--device", "cpu", "--threads", "1", "--log-every", "1"], run, tmp_path, inside_epoch=True)
    assert rc == 0, err
    assert f"train-align: {EPOCHS} epochs, {EPOCHS * 3} steps" in out, out
    _assert_resumed(run, prog, "train-align", saved, steps_per_epoch=3, log_every=1)
    straight.result()
    assert load_align(run / "checkpoints" / "model.pt").vocab == sorted(synth.SYNTH_TAGS)  # it loads
    _assert_same_weights(load_checkpoint(tmp_path / "straight" / "checkpoints" / "model.pt")["state_dict"],
                         load_checkpoint(run / "checkpoints" / "model.pt")["state_dict"])


def test_train_segmenter_sigkill_then_resume(data, tmp_path):
    from gaudi_engine.models.checkpoint import save_checkpoint
    from gaudi_engine.models.registry import create_align_model
    from gaudi_engine.train.align import align_payload

    root, info = data
    torch.manual_seed(0)
    align = save_checkpoint(tmp_path / "align.pt", align_payload(create_align_model("gaudi-tiny", image_size=64),
                                                                 list(synth.SYNTH_TAGS), synth.TAG_DESCRIPTIONS))
    run, prog, gt = tmp_path / "runs" / "s", tmp_path / "resume_progress.jsonl", root / "data" / "gt"
    common = ["train-segmenter", "--manifest", info["manifest"], "--tag-desc", info["tag_descriptions"],
              "--gt-masks", gt, "--init-from", align, "--out", run, "--device", "cpu"]
    straight = _in_background(train_segmenter, info["manifest"], info["tag_descriptions"], None,
                              tmp_path / "straight", EPOCHS, init_from=align, gt_masks=gt, batch_size=16, device="cpu")
    rc, out, err, saved = _kill_then_resume(
        ["--workspace", tmp_path, *common, "--epochs", EPOCHS, "--batch-size", "16"],
        ["--workspace", tmp_path, "--progress-jsonl", prog, *common, "--resume"], run, tmp_path, inside_epoch=False)
    assert rc == 0, err
    _assert_resumed(run, prog, "train-segmenter", saved, steps_per_epoch=3, log_every=10)
    straight.result()
    load_segmenter(run / "checkpoints" / "model.pt")  # the final checkpoint loads
    _assert_same_weights(load_checkpoint(tmp_path / "straight" / "checkpoints" / "model.pt")["state_dict"],
                         load_checkpoint(run / "checkpoints" / "model.pt")["state_dict"])


def test_train_align_killed_before_its_first_checkpoint_starts_again(data, tmp_path):
    """Nothing to resume yet: --resume says so in one line and how to go on; the same command
    without --resume then trains in the same folder (a killed run does not hold it)."""
    root, info = data
    run, prog = tmp_path / "runs" / "a", tmp_path / "progress.jsonl"
    args = ["--workspace", tmp_path, "train-align", "--manifest", info["manifest"], "--tag-desc",
            info["tag_descriptions"], "--out", run, "--model", "gaudi-tiny", "--image-size", "64",
            "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--threads", "1"]
    sigkill_when(["--progress-jsonl", prog, *args],
                 lambda: any(r.get("stage") == "train-align" for r in jsonl_records(prog)), log=tmp_path / "killed.log")
    assert not (run / "checkpoints" / "last.pt").exists(), "killed too late: epoch 0 was saved"
    rc, _, err = run_gaudi_cmd("--workspace", tmp_path, "train-align", "--out", run, "--resume", "--device", "cpu")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "no checkpoint" in lines[0] and "without --resume" in lines[0], err
    rc, out, err = run_gaudi_cmd(*args, timeout=180)
    assert rc == 0, err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 12
    assert leftover_temp_files(run) == []
