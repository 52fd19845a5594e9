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
    from gaudi_engine.pseudo.run import run_pseudolabels
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
    from gaudi_engine.pseudo.run import run_pseudolabels

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


@pytest.fixture(scope="module")
def segmenter(trained):
    """Stage B on the round-1 pseudo-masks (4 epochs): the pipeline's whole model."""
    from gaudi_engine.pseudo.run import run_pseudolabels
    from gaudi_engine.train.segmenter import train_segmenter

    root, info, ckpt = trained
    if not (root / "pm" / "index.parquet").exists():
        run_pseudolabels(info["manifest"], info["tag_descriptions"], ckpt, root / "pm")
    return train_segmenter(info["manifest"], info["tag_descriptions"], root / "pm", root / "seg", 4,
                           batch_size=16, device="cpu")


def test_segmenter_and_infer(trained, segmenter, tmp_path):
    from gaudi_engine import synth
    from gaudi_engine.bench.quality import score_predictor
    from gaudi_engine.infer import Predictor
    from gaudi_engine.train.data import read_manifest

    root, info, ckpt = trained
    s = segmenter
    test = synth.generate(tmp_path / "test", 24, seed=0, size=SIZE, split="test")
    res = score_predictor(Predictor(ckpt, s["checkpoint"]), read_manifest(test["manifest"]), tmp_path / "test" / "gt")
    stuff = {t: v for t, v in res["per_tag"].items() if t in STUFF}
    assert max(stuff.values()) >= BOUND, res["per_tag"]


def _variants(src, out_dir):
    """The same scene as users bring it: upscaled to 1024 and 3072 px (long side, as JPEG, the way
    Danbooru serves originals) and letterboxed into a 2:3 portrait; with where the scene lies."""
    from PIL import Image

    im = Image.open(src).convert("RGB")
    w, h = im.size
    out = {}
    for side in (1024, 3072):
        s = side / max(w, h)
        big = im.resize((round(w * s), round(h * s)), Image.BICUBIC)
        p = out_dir / f"{src.stem}_{side}.jpg"
        big.save(p, quality=95)
        out[str(side)] = (p, (0, 0, big.width, big.height))
    pw = max(w, round(h * 2 / 3))
    ph = round(pw * 3 / 2)
    portrait = Image.new("RGB", (pw, ph), (128, 128, 128))  # neutral bars, as `imaging` pads
    x0, y0 = (pw - w) // 2, (ph - h) // 2
    portrait.paste(im, (x0, y0))
    p = out_dir / f"{src.stem}_portrait.png"
    portrait.save(p)
    out["2:3"] = (p, (x0, y0, w, h))
    return out


def test_masks_do_not_change_with_the_pictures_pixel_count(trained, segmenter, tmp_path):
    """The same scene at its own size, at 1024 and 3072 px and letterboxed into a 2:3 portrait: masks
    at each picture's own size that score against the ground truth (inside the scene) at least
    0.95 x the native-size masks, with the mean per-tag IoU between the variants' and the native
    masks >= 0.65 (per tag it is not yet >= 0.9 everywhere: regions flip on near-threshold maps,
    issue 14 note); and a 2048x3072 picture through pseudolabels and infer end to end."""
    from PIL import Image

    from gaudi_engine import rle, synth
    from gaudi_engine.infer import Predictor
    from gaudi_engine.pseudo.run import run_pseudolabels
    from gaudi_engine.train.data import read_manifest

    root, info, ckpt = trained
    side = SIZE[1]  # square scenes, as the 192-px ones: a 2:3 portrait holds one at full width
    test = synth.generate(tmp_path / "test", 8, seed=1, size=(side, side), split="test")
    pred = Predictor(ckpt, segmenter["checkpoint"])
    ious: dict[str, IoUAccumulator] = {}
    truth: dict[str, IoUAccumulator] = {"native": IoUAccumulator()}
    gt_dir = tmp_path / "test" / "gt"
    for rec in read_manifest(test["manifest"]):
        tags = rec["tags"]
        native = pred.predict(rec["image_path"], tags)
        w, h = native["width"], native["height"]
        ref = {t["tag"]: rle.decode(t["mask"]) for t in native["tags"]}
        gt = {t: np.asarray(Image.open(gt_dir / rec["image_path"].stem / f"{t}.png")) > 127 for t in tags
              if (gt_dir / rec["image_path"].stem / f"{t}.png").exists()}
        for t, g in gt.items():
            truth["native"].add(t, ref[t], g)
        for name, (path, (x0, y0, sw, sh)) in _variants(rec["image_path"], tmp_path).items():
            res = pred.predict(path, tags)
            big_w, big_h = Image.open(path).size
            assert (res["width"], res["height"]) == (big_w, big_h)
            for t in res["tags"]:
                m = rle.decode(t["mask"])
                assert m.shape == (big_h, big_w)
                m = m[y0:y0 + sh, x0:x0 + sw]  # inside the original area
                m = np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST))
                if t["tag"] in gt:
                    truth.setdefault(name, IoUAccumulator()).add(t["tag"], m, gt[t["tag"]])
                if max(m.mean(), ref[t["tag"]].mean()) < 0.01:
                    continue  # nothing found either way: a speck on one side is no disagreement
                ious.setdefault(name, IoUAccumulator()).add(t["tag"], m, ref[t["tag"]])
    base = truth["native"].miou()
    for name, acc in sorted(ious.items(), key=lambda kv: kv[0] == "3072"):
        per_tag = acc.per_tag()
        print(name, "vs truth %.3f (native %.3f)" % (truth[name].miou(), base), {t: round(v, 3) for t, v in per_tag.items()})
        # 0.95 x native, less one point: the tiny model scores ~0.12-0.14 against the truth here, so
        # 0.95 x is 0.006 absolute, under the noise of 8 scenes; a collapse (issue 14: 0.32 x) fails
        assert truth[name].miou() >= 0.95 * base - 0.01, (name, truth[name].miou(), base)
        # agreement with the native masks: 0.74-0.80 mean here (vanishing masks, as before issue 14,
        # score ~0); per tag >= 0.9 is not reached yet (BENCHMARKS.md, session 8)
        assert acc.miou() >= 0.65, (name, per_tag)

    # one Danbooru-sized original through pseudolabels and infer, masks at its own size
    big = tmp_path / "big"
    big.mkdir()
    rec = read_manifest(test["manifest"])[0]
    im = Image.open(rec["image_path"]).convert("RGB")
    im.resize((2048, 3072), Image.BICUBIC).save(big / "tall.jpg", quality=90)
    (big / "manifest.csv").write_text(f"post_id,image_path,tags\n1,tall.jpg,{' '.join(rec['tags'])}\n")
    s = run_pseudolabels(big / "manifest.csv", info["tag_descriptions"], ckpt, big / "pm")
    assert s["processed"] == 1 and s["masks"] == len(rec["tags"])
    idx = pd.read_parquet(big / "pm" / "index.parquet")
    for row in idx.itertuples(index=False):
        assert (row.width, row.height) == (2048, 3072)
        assert Image.open(big / "pm" / row.mask_path).size == (2048, 3072)
        assert Image.open(big / "pm" / row.score_path).size == (2048, 3072)
    assert any((big / "cache").rglob("*.png")), "the working image was not cached beside the manifest"
    res = pred.predict(big / "tall.jpg", rec["tags"])
    assert [rle.decode(t["mask"]).shape for t in res["tags"]] == [(3072, 2048)] * len(rec["tags"])
