"""Checkpoint round trip (weights_only) and one-line errors for missing/corrupt checkpoints."""
import pytest
import torch

from gaudi_engine.errors import GaudiError
from gaudi_engine.models.checkpoint import load_align, load_checkpoint, save_checkpoint
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
