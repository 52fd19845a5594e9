"""A tiny ViT open_clip architecture (random init) through text-CAM, pseudolabels, Stage B and infer."""
import json

import numpy as np
import pandas as pd
import torch

from gaudi_engine import rle

TINY_VIT = {"embed_dim": 32,
            "vision_cfg": {"image_size": 64, "layers": 2, "width": 48, "patch_size": 8, "head_width": 24},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_vit_cam_pseudolabels_segmenter_infer(tmp_path):
    import open_clip

    from gaudi_engine import synth
    from gaudi_engine.infer import Predictor
    from gaudi_engine.models.checkpoint import save_checkpoint
    from gaudi_engine.models.registry import create_align_model
    from gaudi_engine.imaging import Preprocess, model_input, to_working
    from gaudi_engine.pseudo.cam import CamConfig, text_cam
    from gaudi_engine.pseudo.run import run_pseudolabels
    from gaudi_engine.train.segmenter import train_segmenter

    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "test-vit-tiny.json").write_text(json.dumps(TINY_VIT))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(0)
    model = create_align_model("test-vit-tiny", pretrained="none", image_size=64).eval()
    assert model.tower == "vit"
    info = synth.generate(tmp_path / "data", 4, seed=3, size=(64, 72))
    vocab = list(synth.SYNTH_TAGS)
    with torch.no_grad():
        emb = model.tag_embeddings(synth.TAG_DESCRIPTIONS, vocab)
    ckpt = save_checkpoint(tmp_path / "vit.pt", {"kind": "align", **model.export_config(), "state_dict": model.state_dict(),
                                                 "vocab": vocab, "text_emb": emb, "descriptions": synth.TAG_DESCRIPTIONS})

    from PIL import Image

    img = Image.open(tmp_path / "data/images/000000.png").convert("RGB")
    pre = Preprocess.from_dict(model.preprocess_cfg)
    x, _ = model_input(to_working(img, pre), pre)
    cam = text_cam(model, x, emb[:3], vocab[:3], CamConfig(scales=(1.0, 1.25)))
    assert cam.probs.shape[0] == 3 and cam.views.shape[:2] == (4, 3)  # 2 scales x flip
    assert torch.isfinite(cam.probs).all() and float(cam.probs.min()) >= 0 and float(cam.probs.max()) <= 1

    summary = run_pseudolabels(info["manifest"], info["tag_descriptions"], ckpt, tmp_path / "pm")
    idx = pd.read_parquet(tmp_path / "pm" / "index.parquet")
    assert summary["processed"] == 4 and len(idx) == summary["masks"] > 0
    assert idx[["consistency_iou", "cam_score", "area"]].notna().all().all()

    s = train_segmenter(info["manifest"], info["tag_descriptions"], None, tmp_path / "seg", 1, init_from=ckpt,
                        gt_masks=tmp_path / "data" / "gt", batch_size=2, device="cpu", max_steps=1)
    assert np.isfinite(s["loss"])
    for pred in (Predictor(ckpt), Predictor(ckpt, s["checkpoint"])):
        res = pred.predict(img, "sky grass", threshold=0.5)
        assert [t["tag"] for t in res["tags"]] == ["sky", "grass"]
        assert rle.decode(res["tags"][0]["mask"]).shape == (img.height, img.width)
    # the segmenter's maps are averaged inside the working image's felzenszwalb regions by default
    from gaudi_engine.pseudo.regions import superpixels

    snapping = Predictor(ckpt, s["checkpoint"])
    labels = superpixels(snapping.working(img).pixels, "felzenszwalb")
    snapped = snapping.working_probabilities(img, ["sky"])[0]
    raw = Predictor(ckpt, s["checkpoint"], regions="none").working_probabilities(img, ["sky"])[0]
    for r in np.unique(labels)[:10]:
        inside = snapped[labels == r]
        assert np.allclose(inside, inside[0]) and np.isclose(inside[0], raw[labels == r].mean(), atol=1e-5)
    assert not np.allclose(snapped, raw)
