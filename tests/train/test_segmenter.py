"""Stage B: targets with ignore bands, the loss, a short training run, checkpoint and resume."""
import json

import numpy as np
import pytest
import torch

from gaudi_engine.errors import GaudiError
from gaudi_engine.train.segmenter import IGNORE, SegTargetsConfig, build_targets, seg_loss


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from gaudi_engine import synth
    from gaudi_engine.models.checkpoint import save_checkpoint
    from gaudi_engine.models.registry import create_align_model
    from gaudi_engine.train.align import align_payload

    root = tmp_path_factory.mktemp("seg")
    info = synth.generate(root / "data", 12, seed=1, size=(64, 80))
    torch.manual_seed(0)
    model = create_align_model("gaudi-tiny", image_size=64)
    vocab = list(synth.SYNTH_TAGS)
    ckpt = save_checkpoint(root / "align.pt", align_payload(model, vocab, synth.TAG_DESCRIPTIONS))
    return root, info, ckpt


def test_loss_ignores_and_negatives():
    logits = torch.zeros(1, 2, 4, 4, requires_grad=True)
    target = torch.full((1, 2, 4, 4), IGNORE, dtype=torch.uint8)
    target[0, 0, :2] = 1
    target[0, 0, 2:] = 0
    target[0, 1] = 0  # a negative (absent tag): BCE only
    loss, parts = seg_loss(logits, target)
    loss.backward()
    assert parts["dice"] > 0 and parts["bce"] == pytest.approx(np.log(2), rel=1e-4)
    t2 = target.clone()
    t2[0, 0, 0, 0] = IGNORE
    l_ign, _ = seg_loss(torch.full((1, 2, 4, 4), 0.0), t2)
    logits_bad = torch.zeros(1, 2, 4, 4)
    logits_bad[0, 0, 0, 0] = -20  # a wrong prediction on an ignored pixel costs nothing
    l_bad, _ = seg_loss(logits_bad, t2)
    assert float(l_ign) == pytest.approx(float(l_bad), rel=1e-4)


def test_targets_from_gt_and_pseudomasks(tiny_data, tmp_path):
    from gaudi_engine.train.data import read_manifest

    root, info, _ = tiny_data
    recs = read_manifest(info["manifest"])
    gt = build_targets(recs, {"image_size": 32}, gt_masks=root / "data" / "gt")
    r0 = recs[0]
    assert set(gt[r0["post_id"]]) == set(r0["tags"])
    # a fake pseudo-mask run: one accepted mask with a soft score map, one rejected
    import pandas as pd
    from PIL import Image

    from gaudi_engine.pseudo.output import INDEX_COLUMNS

    pm = tmp_path / "pm"
    (pm / "masks" / "1").mkdir(parents=True)
    (pm / "scores" / "1").mkdir(parents=True)
    m = np.zeros((32, 32), np.uint8)
    m[:, :16] = 255
    s = np.zeros((32, 32), np.uint8)
    s[:, :16] = 230
    s[:, 16:20] = 110  # uncertain near the threshold 0.5
    Image.fromarray(m).save(pm / "masks/1/sky.png")
    Image.fromarray(s).save(pm / "scores/1/sky.png")
    rows = [{c: None for c in INDEX_COLUMNS} | {"post_id": 1, "tag": "sky", "accepted": True, "threshold": 0.5,
                                                 "mask_path": "masks/1/sky.png", "score_path": "scores/1/sky.png"},
            {c: None for c in INDEX_COLUMNS} | {"post_id": 1, "tag": "sun", "accepted": False, "threshold": 0.5,
                                                 "mask_path": "rejected/1/sun.png", "score_path": "scores/1/sun.png"}]
    pd.DataFrame(rows, columns=INDEX_COLUMNS).to_parquet(pm / "index.parquet")
    t = build_targets([{"post_id": 1, "tags": ["sky", "sun"], "image_path": root}], {"image_size": 32}, pseudomasks=pm,
                      cfg=SegTargetsConfig(edge=0))[1]
    assert set(t) == {"sky"}  # the rejected tag is unknown, not a negative
    assert (t["sky"][:, :16] == 1).all() and (t["sky"][:, 16:20] == IGNORE).all() and (t["sky"][:, 24:] == 0).all()
    with pytest.raises(GaudiError):
        build_targets(recs, {"image_size": 32}, pseudomasks=tmp_path / "nothing")


def test_train_checkpoint_resume(tiny_data, tmp_path):
    from gaudi_engine.models.segmenter import load_segmenter
    from gaudi_engine.train.segmenter import train_segmenter

    root, info, ckpt = tiny_data
    out = tmp_path / "seg"
    s = train_segmenter(info["manifest"], info["tag_descriptions"], None, out, 1, init_from=ckpt,
                        gt_masks=root / "data" / "gt", batch_size=4, device="cpu")
    assert np.isfinite(s["loss"]) and s["steps"] == 3
    b = load_segmenter(out / "checkpoints" / "model.pt")
    assert b.vocab[:3] == ["sky", "cloud", "sun"] and b.text_emb.shape[0] == len(b.vocab)
    with torch.no_grad():
        y = b.model(torch.zeros(1, 3, 64, 64), b.text_emb[:5], out_size=(64, 64))
    assert y.shape == (1, 5, 64, 64)
    # simulate a 2-epoch run interrupted after its first epoch (resume forces the saved config back)
    from gaudi_engine.models.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(out / "checkpoints" / "last.pt")
    payload["train_config"]["epochs"] = 2
    save_checkpoint(out / "checkpoints" / "last.pt", payload)
    s2 = train_segmenter(info["manifest"], info["tag_descriptions"], None, out, 5, init_from=ckpt,
                         gt_masks=root / "data" / "gt", batch_size=4, device="cpu", resume=True)
    assert s2["steps"] == 6 and s2["epochs"] == 2
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if "epoch_loss" in x] == [0, 1]
    with pytest.raises(GaudiError):
        load_segmenter(ckpt)  # an align checkpoint is not a segmenter
    # round 2: --init-from a segmenter checkpoint goes on training it (its weights, not a fresh decoder)
    first = load_segmenter(out / "checkpoints" / "model.pt").model.state_dict()
    assert s2["checkpoint"] == str(out / "checkpoints" / "model.pt")
    s3 = train_segmenter(info["manifest"], info["tag_descriptions"], None, tmp_path / "seg2", 1,
                         init_from=out / "checkpoints" / "model.pt", gt_masks=root / "data" / "gt", batch_size=4,
                         device="cpu", lr=1e-9)
    cont = load_segmenter(tmp_path / "seg2" / "checkpoints" / "model.pt").model.state_dict()
    assert s3["steps"] == 3
    assert torch.allclose(cont["head.weight"], first["head.weight"], atol=1e-5)
