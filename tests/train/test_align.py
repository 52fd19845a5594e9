"""Stage A: it learns (mAP far above a shuffled-labels control), the CLI writes the run layout,
--resume continues exactly, and bad input ends in one clear line or a warning."""
import csv
import json
import logging

import numpy as np
import pytest
import torch

from gaudi_engine import synth
from gaudi_engine.cli import main as gaudi
from gaudi_engine.errors import GaudiError
from gaudi_engine.models.checkpoint import RESUME_KEYS, load_align, load_checkpoint, plain_layout
from gaudi_engine.train import align as stage_a
from gaudi_engine.train.data import read_manifest

torch.set_num_threads(1)
TINY = dict(model_name="gaudi-tiny", image_size=64, device="cpu", log_every=2)


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synth.generate(root / "train", 120, seed=0, size=(64, 96), split="train", write_gt=False)
    synth.generate(root / "test", 60, seed=0, size=(64, 96), split="test", write_gt=False)
    return root


def _shuffled_manifest(src, dst, seed=0):
    rows = list(csv.DictReader(open(src)))
    tags = [r["tags"] for r in rows]
    np.random.default_rng(seed).shuffle(tags)
    with open(dst, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r, t in zip(rows, tags):
            w.writerow({**r, "tags": t, "image_path": str((src.parent / r["image_path"]).resolve())})
    return dst


def test_stage_a_ranks_present_tags_above_absent(synth_data, tmp_path):
    train, test = synth_data / "train", synth_data / "test"
    desc = train / "tag_descriptions.json"
    stage_a.train_align(train / "manifest.csv", desc, tmp_path / "real", epochs=6, **TINY)
    shuffled = _shuffled_manifest(train / "manifest.csv", tmp_path / "shuffled.csv")
    stage_a.train_align(shuffled, desc, tmp_path / "shuffled", epochs=6, **TINY)
    records = read_manifest(test / "manifest.csv")
    real = stage_a.evaluate_map(load_align(tmp_path / "real" / "checkpoints" / "model.pt"), records)
    control = stage_a.evaluate_map(load_align(tmp_path / "shuffled" / "checkpoints" / "model.pt"), records)
    print("mAP real %.3f shuffled-labels control %.3f" % (real["mAP"], control["mAP"]))
    # held-out images: a model that learnt from the tags ranks them far better than one that could not
    assert real["mAP"] >= control["mAP"] + 0.15, (real["mAP"], control["mAP"])
    assert real["per_tag"]["sky"] > 0.9 and real["per_tag"]["beach"] > 0.8, real["per_tag"]


def test_cli_run_layout_and_progress(synth_data, tmp_path, capsys):
    train = synth_data / "train"
    prog = tmp_path / "progress.jsonl"
    rc = gaudi(["--workspace", str(tmp_path), "--progress-jsonl", str(prog), "train-align",
                "--manifest", str(train / "manifest.csv"), "--tag-desc", str(train / "tag_descriptions.json"),
                "--out", "runs/a", "--model", "gaudi-tiny", "--image-size", "64", "--epochs", "2",
                "--batch-size", "16", "--max-steps", "5", "--log-every", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "checkpoint runs/a/checkpoints/model.pt" in out, out
    run = tmp_path / "runs" / "a"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["extra"]["model"] == "gaudi-tiny" and cfg["batch_size"] == 16 and cfg["world_size"] == 1
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [2, 4, 5]
    assert all(np.isfinite(r["loss"]) and "cls" in r and "step_time" in r for r in lines if "loss" in r)
    assert list((run / "tb").glob("events.out.tfevents.*"))
    events = [json.loads(line) for line in prog.read_text().splitlines()]
    assert any(e["event"] == "metric" and e["stage"] == "train-align" and "loss" in e for e in events)
    assert events[-1]["event"] == "end" and events[-1]["status"] == "ok"
    payload = load_checkpoint(run / "checkpoints" / "model.pt")
    assert payload["kind"] == "align" and payload["step"] == 5 and payload["epoch"] == 0
    # model.pt: the model without resume state; last.pt: the same + optimizer, scheduler, scaler, rng
    resume = load_checkpoint(run / "checkpoints" / "last.pt")
    assert not set(RESUME_KEYS) & set(payload) and set(RESUME_KEYS) <= set(resume)
    assert resume["optimizer"]["state"] and set(payload) == set(resume) - set(RESUME_KEYS)
    assert all(torch.equal(v, resume["state_dict"][k]) for k, v in payload["state_dict"].items())
    assert (run / "checkpoints" / "model.pt").stat().st_size < (run / "checkpoints" / "last.pt").stat().st_size
    # trained channels_last, saved with plain strides: loading takes the tensors as they are
    assert all(plain_layout(v) is v for v in payload["state_dict"].values())
    assert payload["vocab"] == sorted(payload["vocab"]) and len(payload["vocab"]) == len(synth.SYNTH_TAGS)
    assert payload["text_emb"].shape == (len(payload["vocab"]), 64)
    assert payload["train_config"]["extra"]["manifest"].endswith("manifest.csv")


def test_resume_continues_exactly(synth_data, tmp_path, monkeypatch):
    train = synth_data / "train"
    args = (train / "manifest.csv", train / "tag_descriptions.json")
    kw = dict(TINY, epochs=2, batch_size=32, max_steps=None)
    stage_a.train_align(*args, tmp_path / "straight", **kw)

    class Interrupted(Exception):
        pass

    real_set_epoch = stage_a.TagImageDataset.set_epoch

    def crash_in_second_epoch(self, epoch):
        if epoch == 1:
            raise Interrupted()
        real_set_epoch(self, epoch)

    monkeypatch.setattr(stage_a.TagImageDataset, "set_epoch", crash_in_second_epoch)
    with pytest.raises(Interrupted):
        stage_a.train_align(*args, tmp_path / "resumed", **kw)
    monkeypatch.setattr(stage_a.TagImageDataset, "set_epoch", real_set_epoch)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["epoch"] == 0
    # resumed with other settings: the saved run config wins (epochs, lr, model...)
    summary = stage_a.train_align(None, None, tmp_path / "resumed", resume=True, epochs=9, lr=0.5, device="cpu")
    assert summary["epochs"] == 2
    assert summary["checkpoint"].endswith("model.pt") and summary["resume_checkpoint"].endswith("last.pt")
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "model.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "model.pt")
    assert a["step"] == b["step"] and a["train_config"]["lr"] == b["train_config"]["lr"]
    for k, v in a["state_dict"].items():
        assert torch.allclose(v.float(), b["state_dict"][k].float(), atol=1e-5), k


def test_bad_input(synth_data, tmp_path, caplog, capsys):
    train = synth_data / "train"
    rows = list(csv.DictReader(open(train / "manifest.csv")))[:12]
    bad_img = tmp_path / "broken.png"
    bad_img.write_bytes(b"\x89PNG not really")
    rows[0] = {**rows[0], "image_path": str(bad_img), "tags": "sky unknown_tag_without_text"}
    for r in rows[1:]:
        r["image_path"] = str((train / r["image_path"]).resolve())
    man = tmp_path / "m.csv"
    with open(man, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with caplog.at_level(logging.WARNING, logger="gaudi_engine"):
        s = stage_a.train_align(man, train / "tag_descriptions.json", tmp_path / "run", epochs=1, **TINY)
    assert s["images"] == 11 and s["skipped_images"] == 1
    text = caplog.text
    assert "broken.png" in text and "unknown_tag_without_text" in text and "using its name" in text
    # an empty manifest, a missing one and missing descriptions: one line each, exit status 2
    capsys.readouterr()  # drop the warnings above (the CLI's handler may print them too)
    empty = tmp_path / "empty.csv"
    empty.write_text("post_id,image_path,tags,md5,rating,width,height\n")
    for argv, needle in ([["--manifest", str(empty)], "no rows"],
                         [["--manifest", str(tmp_path / "nope.csv")], "not found"],
                         [["--manifest", str(man), "--tag-desc", str(tmp_path / "nope.json")], "not found"]):
        rc = gaudi(["--workspace", str(tmp_path), "train-align", "--model", "gaudi-tiny", "--out", "r2", *argv])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    if not torch.cuda.is_available():
        rc = gaudi(["--workspace", str(tmp_path), "train-align", "--model", "gaudi-tiny", "--out", "r3",
                    "--manifest", str(man), "--device", "cuda"])
        err = capsys.readouterr().err
        assert rc == 2 and "no CUDA device" in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(GaudiError, match="no checkpoint"):
        stage_a.train_align(None, None, tmp_path / "never", resume=True)


def test_cli_lite2_one_step(synth_data, tmp_path):
    """`--model gaudi-lite2` trains from the ImageNet Lite2 trunk and its checkpoint loads through
    the lean towers (no open_clip) with the trunk a small step away from the ImageNet weights (two
    steps: the first one's learning rate is warmup's 0)."""
    from gaudi_engine.models.lean import LeanCLIP
    from gaudi_engine.models.registry import create_align_model

    train = synth_data / "train"
    rc = gaudi(["--workspace", str(tmp_path), "train-align", "--manifest", str(train / "manifest.csv"),
                "--tag-desc", str(train / "tag_descriptions.json"), "--out", "runs/l2", "--model", "gaudi-lite2",
                "--image-size", "64", "--epochs", "1", "--batch-size", "4", "--max-steps", "2", "--log-every", "1",
                "--device", "cpu"])
    assert rc == 0
    run = tmp_path / "runs" / "l2"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in lines if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2] and all(np.isfinite(r["loss"]) for r in losses)
    b = load_align(run / "checkpoints" / "model.pt")
    assert isinstance(b.model.clip, LeanCLIP)
    assert b.config["model_name"] == "gaudi-lite2" and b.config["align_cfg"]["init"] == "lite2_imagenet"
    start = create_align_model("gaudi-lite2", image_size=64).clip.visual.trunk.state_dict()
    got = b.model.clip.visual.trunk.state_dict()
    w, w0 = got["blocks.2.2.conv_pwl.weight"], start["blocks.2.2.conv_pwl.weight"]  # a trained level
    assert not torch.equal(w, w0) and torch.nn.functional.cosine_similarity(w.flatten(), w0.flatten(), 0) > 0.99
