"""Checkpoint round trip (weights_only) and one-line errors for missing/corrupt checkpoints."""
import pytest
import torch

from gaudi_engine.errors import GaudiError
from gaudi_engine.models.checkpoint import (RESUME_KEYS, load_align, load_checkpoint, resolve_checkpoint,
                                            save_checkpoint, save_run_checkpoints)
from gaudi_engine.models.registry import create_align_model
from gaudi_engine.train.align import align_payload

torch.set_num_threads(1)
DESCS = {"sky": ["a blue sky above"], "grass": ["green grass below"]}


@pytest.mark.parametrize("name", ["gaudi-tiny", "gaudi-vit-tiny"])
def test_round_trip(tmp_path, name):
    torch.manual_seed(0)
    m = create_align_model(name, image_size=64)
    with torch.no_grad():
        m.background.add_(0.3)
    payload = align_payload(m, ["grass", "sky"], DESCS)
    payload.update(train_config={"epochs": 3}, epoch=2, step=30)
    path = save_checkpoint(tmp_path / "ck" / "last.pt", payload)
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temp file
    torch.load(path, weights_only=True)  # every value is weights_only-safe
    b = load_align(path, "cpu")
    assert b.vocab == ["grass", "sky"] and b.preprocess["image_size"] == 64
    assert b.config["model_name"] == name and b.config["epoch"] == 2 and b.descriptions["sky"] == DESCS["sky"]
    m.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(b.model.dense_features(x), m.dense_features(x))
        assert torch.allclose(b.text_emb, m.tag_embeddings(DESCS, ["grass", "sky"]))
        assert torch.equal(b.model.background, m.background)


def test_missing_corrupt_and_foreign_checkpoints(tmp_path):
    with pytest.raises(GaudiError, match="not found"):
        load_align(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 100)
    truncated = tmp_path / "trunc.pt"
    m = create_align_model("gaudi-tiny")
    save_checkpoint(truncated, align_payload(m, ["sky"], DESCS))
    truncated.write_bytes(truncated.read_bytes()[:5000])
    listy = tmp_path / "list.pt"
    torch.save([1, 2, 3], listy)
    for bad in (junk, truncated, listy):
        with pytest.raises(GaudiError) as exc:
            load_checkpoint(bad)
        assert "\n" not in str(exc.value) and str(bad) in str(exc.value)
    seg = tmp_path / "seg.pt"
    save_checkpoint(seg, {"kind": "segmenter", "state_dict": {}})
    with pytest.raises(GaudiError, match="not an align"):
        load_align(seg)


def test_cli_corrupt_checkpoint_is_one_line(run_gaudi, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    rc, _, err = run_gaudi("--workspace", str(tmp_path), "train-align", "--resume", "--out", str(out))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "corrupt" in err, err


def _resume_state(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.background.sum().backward()
    opt.step()
    return {"optimizer": opt.state_dict(), "scheduler": {"last_epoch": 3}, "scaler": {}, "rng": {"torch": torch.get_rng_state()}}


def test_run_checkpoints_model_pt_has_no_resume_state(tmp_path):
    """A run writes last.pt (model + resume state) and model.pt (the model alone); both load, a run
    folder resolves to its model.pt, and a run from before model.pt existed to its last.pt."""
    torch.manual_seed(0)
    m = create_align_model("gaudi-tiny", image_size=64)
    payload = {**align_payload(m, ["grass", "sky"], DESCS), "train_config": {"epochs": 1}, "epoch": 0, "step": 3,
               **_resume_state(m)}
    run = tmp_path / "runs" / "align_x"
    model_pt, last_pt = save_run_checkpoints(run / "checkpoints", payload)
    assert (model_pt.name, last_pt.name) == ("model.pt", "last.pt")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt", "model.pt"]  # no temp files
    exported, full = load_checkpoint(model_pt), load_checkpoint(last_pt)
    assert not set(RESUME_KEYS) & set(exported) and set(RESUME_KEYS) <= set(full)
    assert full["optimizer"]["state"] and set(exported) == set(full) - set(RESUME_KEYS)
    assert model_pt.stat().st_size < last_pt.stat().st_size
    assert resolve_checkpoint(run) == model_pt and resolve_checkpoint(run / "checkpoints") == model_pt
    m.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = m.dense_features(x)
        for path in (model_pt, last_pt, run):  # last.pt still loads for inference
            b = load_align(path)
            assert b.config["step"] == 3 and torch.equal(b.model.dense_features(x), want)
    model_pt.unlink()  # an older run: last.pt only
    assert resolve_checkpoint(model_pt) == last_pt and resolve_checkpoint(run) == last_pt
    with torch.no_grad():
        assert torch.equal(load_align(model_pt).model.dense_features(x), want)
    with pytest.raises(GaudiError, match="not found"):
        load_align(tmp_path / "runs" / "other" / "checkpoints" / "model.pt")


def test_segmenter_model_pt_loads(tmp_path):
    from gaudi_engine.models.segmenter import TextSegmenter, load_segmenter, segmenter_payload

    torch.manual_seed(0)
    align = create_align_model("gaudi-tiny", image_size=64)
    seg = TextSegmenter(align, dec_dim=16)
    base = {"kind": "align", **align.export_config(), "vocab": ["sky"], "text_emb": torch.randn(1, 64),
            "descriptions": {}}
    payload = {**segmenter_payload(seg, base), "train_config": {}, "epoch": 0, "step": 1, **_resume_state(align)}
    model_pt, _ = save_run_checkpoints(tmp_path / "seg_x" / "checkpoints", payload)
    assert not set(RESUME_KEYS) & set(load_checkpoint(model_pt))
    b = load_segmenter(model_pt)
    seg.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(b.model(x, b.text_emb), seg(x, b.text_emb))


@pytest.mark.parametrize("name", ["gaudi-lite0", "gaudi-lite2"])
def test_lite_checkpoint_loads_without_open_clip_towers(tmp_path, name):
    """gaudi-lite0/2 come back as the lean towers (models/lean.py) with the numbers open_clip's towers
    gave when loaded from the checkpoint (also one saved from channels_last training, whose conv
    weights keep their strides), and as a segmenter's align part."""
    from gaudi_engine.models.align import AlignModel
    from gaudi_engine.models.lean import LeanCLIP
    from gaudi_engine.models.registry import build_clip
    from gaudi_engine.models.segmenter import TextSegmenter, load_segmenter, segmenter_payload

    torch.manual_seed(0)
    m = create_align_model(name, pretrained="none", image_size=64)
    m.to(memory_format=torch.channels_last)  # as train_loop does: conv weights are saved strided
    payload = align_payload(m, ["grass", "sky"], DESCS)
    path = save_checkpoint(tmp_path / "model.pt", payload)
    b = load_align(path)
    assert isinstance(b.model.clip, LeanCLIP)
    # what loading did before the lean towers: open_clip's model, the checkpoint copied into it
    old = AlignModel(build_clip(payload["model_cfg"]), payload["model_name"], payload["model_cfg"],
                     payload["preprocess"], payload["align_cfg"])
    assert type(old.clip).__name__ == "CLIP"
    old.load_state_dict(load_checkpoint(path)["state_dict"])
    old.eval()
    assert all(p.stride() == q.stride() for p, q in zip(b.model.parameters(), old.parameters()))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(b.model.dense_features(x), old.dense_features(x))
        assert all(torch.equal(u, v) for u, v in zip(b.model.trunk_features(x), old.trunk_features(x)))
        texts = ["a blue sky above", "tall red tower"]
        assert torch.equal(b.model.encode_texts(texts), old.encode_texts(texts))
    seg = TextSegmenter(old, dec_dim=16).eval()
    base = {k: v for k, v in payload.items() if k != "state_dict"}
    spath = save_checkpoint(tmp_path / "seg.pt", segmenter_payload(seg, base))
    sb = load_segmenter(spath)
    assert isinstance(sb.model.align.clip, LeanCLIP)
    with torch.no_grad():
        assert torch.equal(sb.model(x, sb.text_emb), seg(x, sb.text_emb))
