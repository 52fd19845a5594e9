"""End to end on a tiny SynthBooru: Stage A -> pseudolabels -> Stage B -> infer, scored against the
ground truth the pipeline never sees. Large stuff tags must reach an IoU a broken pipeline cannot,
and the same pipeline trained on shuffled tags (a control) must stay below it."""
import os

import numpy as np
import pandas as pd
import pytest
import torch

from gaudi_engine.metrics import IoUAccumulator

N_TRAIN, SIZE, IMAGE_SIZE, EPOCHS = 120, (64, 96), 64, 6
STUFF = ("sky", "grass", "ocean")
# Dataset-level IoU of the accepted pseudo-masks of a large stuff tag. A whole-image mask scores
# the tag's area share (~0.5 for grass), an empty one 0: the bound is above both.
BOUND = 0.6


def _whole_image_iou(records, gt_root, tag) -> float:
    from PIL import Image

    gt_sum = area = 0
    for r in records:
        p = gt_root / r["image_path"].stem / f"{tag}.png"
        if tag in r["tags"] and p.exists():
            g = np.asarray(Image.open(p)) > 127
            gt_sum, area = gt_sum + g.sum(), area + g.size
    return gt_sum / max(area, 1)


def _stuff_iou(run_dir, records, gt_root, accepted_only=True) -> dict:
    from PIL import Image

    idx = pd.read_parquet(run_dir / "index.parquet")
    by_id = {r["post_id"]: r for r in records}
    acc = IoUAccumulator()
    for row in idx.itertuples(index=False):
        if row.tag not in STUFF:
            continue
        gt = np.asarray(Image.open(gt_root / by_id[row.post_id]["image_path"].stem / f"{row.tag}.png")) > 127
        m = np.asarray(Image.open(run_dir / row.mask_path)) > 127
        acc.add(row.tag, m if (row.accepted or not accepted_only) else np.zeros_like(m), gt)
    return acc.per_tag()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from gaudi_engine import synth
    from gaudi_engine.train.align import train_align

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    root = tmp_path_factory.mktemp("e2e")
    info = synth.generate(root / "train", N_TRAIN, seed=0, size=SIZE, split="train")
    train_align(info["manifest"], info["tag_descriptions"], root / "align", model_name="gaudi-tiny",
                epochs=EPOCHS, image_size=IMAGE_SIZE, device="cpu", batch_size=32)
    return root, info, root / "align" / "checkpoints" / "last.pt"


def test_stuff_tags_localised_and_control_fails(trained):
    from gaudi_engine.pseudo.pipeline import run_pseudolabels
    from gaudi_engine.train.align import train_align
    from gaudi_engine.train.data import read_manifest

    root, info, ckpt = trained
    records = read_manifest(info["manifest"])
    run_pseudolabels(info["manifest"], info["tag_descriptions"], ckpt, root / "pm")
    ious = _stuff_iou(root / "pm", records, root / "train" / "gt")
    best = max(ious, key=ious.get)
    trivial = _whole_image_iou(records, root / "train" / "gt", best)
    assert ious[best] >= max(BOUND, trivial + 0.15), (ious, trivial)

    # control: the same pipeline, trained on tags shuffled across images
    rng = np.random.default_rng(0)
    df = pd.read_csv(info["manifest"])
    df["tags"] = df["tags"].to_numpy()[rng.permutation(len(df))]
    shuffled = root / "train" / "manifest_shuffled.csv"
    df.to_csv(shuffled, index=False)
    train_align(shuffled, info["tag_descriptions"], root / "align_ctrl", model_name="gaudi-tiny",
                epochs=EPOCHS, image_size=IMAGE_SIZE, device="cpu", batch_size=32)
    run_pseudolabels(info["manifest"], info["tag_descriptions"], root / "align_ctrl/checkpoints/last.pt", root / "pm_ctrl")
    ctrl = _stuff_iou(root / "pm_ctrl", records, root / "train" / "gt", accepted_only=False)
    assert max(ctrl.values()) < BOUND and ctrl[best] < ious[best] - 0.15, (ctrl, ious)


def test_shards_equal_unsharded(trained, tmp_path):
    from gaudi_engine.pseudo.pipeline import run_pseudolabels

    root, info, ckpt = trained
    df = pd.read_csv(info["manifest"]).head(10)
    df["image_path"] = [str(root / "train" / p) for p in df["image_path"]]
    small = tmp_path / "small.csv"
    df.to_csv(small, index=False)
    run_pseudolabels(small, info["tag_descriptions"], ckpt, tmp_path / "full")
    run_pseudolabels(small, info["tag_descriptions"], ckpt, tmp_path / "sharded", shard="1/2")
    run_pseudolabels(small, info["tag_descriptions"], ckpt, tmp_path / "sharded", shard="0/2")
    a = pd.read_parquet(tmp_path / "full" / "index.parquet")
    b = pd.read_parquet(tmp_path / "sharded" / "index.parquet")
    assert len(a) > 10
    pd.testing.assert_frame_equal(a, b)
    files = sorted(p.relative_to(tmp_path / "full") for p in (tmp_path / "full").rglob("*.png"))
    assert files == sorted(p.relative_to(tmp_path / "sharded") for p in (tmp_path / "sharded").rglob("*.png"))
    for f in files:
        assert (tmp_path / "full" / f).read_bytes() == (tmp_path / "sharded" / f).read_bytes(), f


def test_segmenter_and_infer(trained, tmp_path):
    from gaudi_engine import synth
    from gaudi_engine.bench.quality import score_predictor
    from gaudi_engine.infer import Predictor
    from gaudi_engine.pseudo.pipeline import run_pseudolabels
    from gaudi_engine.train.data import read_manifest
    from gaudi_engine.train.segmenter import train_segmenter

    root, info, ckpt = trained
    if not (root / "pm" / "index.parquet").exists():
        run_pseudolabels(info["manifest"], info["tag_descriptions"], ckpt, root / "pm")
    s = train_segmenter(info["manifest"], info["tag_descriptions"], root / "pm", tmp_path / "seg", 4,
                        batch_size=16, device="cpu")
    test = synth.generate(tmp_path / "test", 24, seed=0, size=SIZE, split="test")
    res = score_predictor(Predictor(ckpt, s["checkpoint"]), read_manifest(test["manifest"]), tmp_path / "test" / "gt")
    stuff = {t: v for t, v in res["per_tag"].items() if t in STUFF}
    assert max(stuff.values()) >= BOUND, res["per_tag"]
