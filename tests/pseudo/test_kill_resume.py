"""`gaudi pseudolabels` killed with SIGKILL part-way and rerun: the rerun labels only the posts the
killed run had not finished, and the run ends with exactly the rows and mask files of an
uninterrupted run — each post once, no half-written line or temp file left behind."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from gaudi_engine import synth
from gaudi_engine.pseudo.config import PseudoConfig
from gaudi_engine.pseudo.run import run_pseudolabels
from tests.killing import assert_ended, count_lines, files_under, kill_and_rerun, leftover_temp_files, sigkill_when

N_POSTS, CALIB = 12, 4  # a small calibration sample: most posts are labelled in the main pass
PART = "parts/shard-0-of-1.jsonl"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from gaudi_engine.models.checkpoint import save_checkpoint
    from gaudi_engine.models.registry import create_align_model
    from gaudi_engine.train.align import align_payload

    root = tmp_path_factory.mktemp("kill_pseudo")
    info = synth.generate(root / "data", N_POSTS, seed=2, size=(64, 80))
    torch.manual_seed(0)
    model = create_align_model("gaudi-tiny", image_size=64)
    save_checkpoint(root / "align.pt", align_payload(model, list(synth.SYNTH_TAGS), synth.TAG_DESCRIPTIONS))
    cfg = PseudoConfig()
    cfg.validators.calib_sample = CALIB
    torch.set_num_threads(1)
    run_pseudolabels(info["manifest"], info["tag_descriptions"], root / "align.pt", root / "straight", config=cfg)
    return root, info


def _outputs(run) -> dict[str, bytes]:
    return {k: v for k, v in files_under(run).items() if k.split("/")[0] in ("masks", "rejected", "scores")}


def test_pseudolabels_sigkill_then_rerun_equals_an_uninterrupted_run(setup, tmp_path):
    root, info = setup
    run = tmp_path / "pm"
    args = ["--workspace", tmp_path, "pseudolabels", "--manifest", info["manifest"], "--tag-desc",
            info["tag_descriptions"], "--align-ckpt", root / "align.pt", "--out", run,
            "--set", f"validators.calib_sample={CALIB}"]
    # killed once the main pass has finished a post of its own (past the calibrated ones)
    rc, out, err = kill_and_rerun(args, lambda: count_lines(run / PART) > CALIB, log=tmp_path / "killed.log")
    assert rc == 0, err
    done_before = int(out.split(" already done")[0].rsplit(" ", 1)[-1])
    assert CALIB < done_before < N_POSTS, out  # the rerun did only what the killed run had not
    assert f"{N_POSTS - done_before} posts labelled" in out, out
    lines = [json.loads(x) for x in (run / PART).read_text().splitlines()]
    assert sorted(x["post_id"] for x in lines) == list(range(1, N_POSTS + 1))  # each post once
    want = pd.read_parquet(root / "straight" / "index.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(run / "index.parquet"), want)
    assert _outputs(run) == _outputs(root / "straight")
    assert leftover_temp_files(run) == []


def test_a_line_cut_by_a_kill_is_redone_not_glued_to_the_next(setup, tmp_path):
    """SIGKILL while a post's line was being appended leaves half a line: the rerun must label
    that post again and keep its own lines whole (appending after the cut one would spoil both)."""
    root, info = setup
    run = tmp_path / "pm"
    cfg = PseudoConfig()
    cfg.validators.calib_sample = CALIB
    run_pseudolabels(info["manifest"], info["tag_descriptions"], root / "align.pt", run, config=cfg, limit=6)
    part = run / PART
    whole = part.read_text().splitlines(keepends=True)
    part.write_text("".join(whole[:5]) + whole[5][: len(whole[5]) // 2])  # post 6's line cut halfway
    s = run_pseudolabels(info["manifest"], info["tag_descriptions"], root / "align.pt", run, config=cfg)
    assert s["skipped_done"] == 5 and s["processed"] == N_POSTS - 5
    assert sorted(json.loads(x)["post_id"] for x in part.read_text().splitlines()) == list(range(1, N_POSTS + 1))
    pd.testing.assert_frame_equal(pd.read_parquet(run / "index.parquet"),
                                  pd.read_parquet(root / "straight" / "index.parquet"))


def test_pseudolabels_workers_end_with_a_killed_command_and_the_rerun_completes(setup, tmp_path):
    """`--workers 2` runs two shard processes: `kill -9` of the command ends them too (they would
    go on writing the run beside the rerun), and a rerun takes over their finished posts and ends
    with the uninterrupted run's rows."""
    root, info = setup
    run = tmp_path / "pm"
    args = ["--workspace", tmp_path, "pseudolabels", "--manifest", info["manifest"], "--tag-desc",
            info["tag_descriptions"], "--align-ckpt", root / "align.pt", "--out", run,
            "--set", f"validators.calib_sample={CALIB}"]
    # the command labels the calibration posts itself (parts/calibration-*), then starts the
    # workers: kill once they have written posts of their own
    killed = sigkill_when([*args, "--workers", "2"], lambda: sum(map(count_lines, run.glob("parts/shard-*.jsonl"))) >= 2,
                          log=tmp_path / "killed.log")
    assert len(killed.children) == 2
    assert_ended(killed.children)
    cfg = PseudoConfig()
    cfg.validators.calib_sample = CALIB
    s = run_pseudolabels(info["manifest"], info["tag_descriptions"], root / "align.pt", run, config=cfg)
    assert s["skipped_done"] >= 2  # the rest, here in this process, after the workers' posts
    lines = [json.loads(x) for p in run.glob("parts/*.jsonl") for x in p.read_text().splitlines()]
    assert sorted(x["post_id"] for x in lines) == list(range(1, N_POSTS + 1))  # each post once
    pd.testing.assert_frame_equal(pd.read_parquet(run / "index.parquet"),
                                  pd.read_parquet(root / "straight" / "index.parquet"))
    assert _outputs(run) == _outputs(root / "straight")
    assert leftover_temp_files(run) == []


def test_an_index_merge_cut_by_a_kill_leaves_no_temp_file(setup, tmp_path):
    """A kill while index.parquet was being written leaves the writer's temp file; the next merge
    deletes it (its writer is gone) but never a running shard's."""
    import os
    import subprocess
    import sys

    from gaudi_engine.pseudo.output import merge_index

    root, _ = setup
    run = tmp_path / "pm"
    (run / "parts").mkdir(parents=True)
    (run / "parts" / "shard-0-of-1.jsonl").write_text((root / "straight" / PART).read_text())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, live = run / f"index.parquet.tmp{int(gone.stdout)}", run / f"index.parquet.tmp{os.getppid()}"
    dead.write_bytes(b"PAR1 half a file")
    live.write_bytes(b"PAR1 being written")
    assert merge_index(run) == len(pd.read_parquet(root / "straight" / "index.parquet"))
    assert not dead.exists() and live.exists()
