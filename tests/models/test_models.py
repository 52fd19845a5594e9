"""AlignModel on each tower kind, --pretrained from a local file, the lite0/lite2 ImageNet weights."""
import socket

import numpy as np
import pytest
import torch

from gaudi_engine.errors import GaudiError
from gaudi_engine.models.registry import create_align_model, list_models

torch.set_num_threads(1)
DESCS = {"sky": ["a blue sky"], "grass": ["green grass", "a grassy field"]}


def test_project_configs_are_open_clip_models():
    import open_clip

    names = list_models()
    assert {"gaudi-lite0", "gaudi-lite2", "gaudi-tiny", "gaudi-vit-tiny"} <= set(names)
    assert open_clip.get_model_config("gaudi-lite0")["vision_cfg"]["timm_model_name"] == "efficientnet_lite0"
    assert open_clip.get_model_config("gaudi-lite2")["vision_cfg"]["timm_model_name"] == "efficientnet_lite2"


@pytest.mark.parametrize("name,size,grid", [("gaudi-tiny", 96, 12), ("gaudi-vit-tiny", 96, 12),
                                            ("gaudi-vit-tiny", 128, 16)])
def test_dense_features_similarity_pooling(name, size, grid):
    torch.manual_seed(0)
    m = create_align_model(name, image_size=96)
    x = torch.randn(2, 3, size, size)
    F = m.dense_features(x)
    assert F.shape == (2, m.embed_dim, grid, grid)  # stride 8: a 12-16 px grid for small images
    assert torch.allclose(F.norm(dim=1), torch.ones(2, grid, grid), atol=1e-4)
    T = m.tag_embeddings(DESCS, ["sky", "grass", "no_description_tag"])
    assert T.shape == (3, m.embed_dim) and torch.allclose(T.norm(dim=1), torch.ones(3), atol=1e-4)
    S = m.similarity(F, T)
    assert S.shape == (2, 3, grid, grid) and S.abs().max() <= 1 + 1e-4
    logits = m.pool_logits(S)
    assert logits.shape == (2, 3)
    feats = m.trunk_features(x)
    assert [f.shape[1] for f in feats] == m.trunk_channels
    assert [size // f.shape[-1] for f in feats] == m.trunk_strides
    # gradients reach both towers and the pooling scale through the dense path
    logits.sum().backward()
    assert m.logit_scale.grad is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.clip.visual.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.clip.transformer.parameters())


def test_pool_localises_more_than_the_mean():
    """LSE pooling rewards one strong spot: a map with a small hot region beats a flat lukewarm one."""
    m = create_align_model("gaudi-tiny")
    flat = torch.full((1, 1, 8, 8), 0.2)
    spot = torch.full((1, 1, 8, 8), 0.1)
    spot[..., :2, :2] = 0.9
    assert spot.mean() < flat.mean() + 0.1 and m.pool_logits(spot) > m.pool_logits(flat)


@pytest.mark.parametrize("name", ["gaudi-tiny", "gaudi-vit-tiny"])
def test_pretrained_from_local_file(tmp_path, name):
    torch.manual_seed(1)
    src = create_align_model(name, pretrained="none")
    with torch.no_grad():
        for p in src.clip.parameters():
            p.add_(0.01)  # distinct from any fresh init
    path = tmp_path / "weights.pt"
    torch.save(src.clip.state_dict(), path)
    torch.manual_seed(2)
    loaded = create_align_model(name, pretrained=str(path))
    fresh = create_align_model(name, pretrained="none")
    for (k, a), b in zip(src.clip.state_dict().items(), loaded.clip.state_dict().values()):
        assert torch.equal(a, b), k
    assert not torch.equal(fresh.clip.visual.state_dict()[next(iter(fresh.clip.visual.state_dict()))],
                           src.clip.visual.state_dict()[next(iter(src.clip.visual.state_dict()))])
    assert loaded.align_cfg["init"] == str(path)
    # a file for another architecture is one clear error
    other = "gaudi-vit-tiny" if name == "gaudi-tiny" else "gaudi-tiny"
    with pytest.raises(GaudiError, match="does not match"):
        create_align_model(other, pretrained=str(path))


def test_hub_tag_without_network_is_one_line(monkeypatch):
    def no_network(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(GaudiError) as exc:
        create_align_model("ViT-B-32", pretrained="laion2b_s34b_b79k")
    assert "--pretrained /path/to/file" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(GaudiError, match="neither a file nor a known tag"):
        create_align_model("gaudi-tiny", pretrained="no_such_tag")
    with pytest.raises(GaudiError, match="unknown model"):
        create_align_model("no-such-model")


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_lite_imagenet_mapping_classifies_chelsea_as_a_cat(variant):
    import timm
    from PIL import Image
    from skimage import data

    from gaudi_engine.models.lite_family import stage_depths
    from gaudi_engine.models.lite_weights import load_lite_imagenet

    trunk = timm.create_model(f"efficientnet_{variant}")
    assert stage_depths(f"efficientnet_{variant}") == [len(s) for s in trunk.blocks]  # timm's depth scaling
    n = load_lite_imagenet(trunk, f"{variant}_imagenet", with_classifier=True)
    assert n == len(trunk.state_dict())  # every key of the trunk came from the file
    trunk.eval()

    def top(img):
        im = Image.fromarray(img).convert("RGB").resize((224, 224), Image.BICUBIC)
        x = (torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
        with torch.no_grad():
            return int(trunk(x[None]).argmax())

    assert 281 <= top(data.chelsea()) <= 285  # tabby / tiger / Persian / Siamese / Egyptian cat
    assert top(data.coffee()) == 967  # espresso
    # and the default gaudi-lite* build starts from those weights (without the classifier)
    m = create_align_model(f"gaudi-{variant}")
    assert torch.equal(m.clip.visual.trunk.conv_stem.weight, trunk.conv_stem.weight)
    assert torch.equal(m.clip.visual.trunk.blocks[-2][-1].conv_pwl.weight, trunk.blocks[-2][-1].conv_pwl.weight)
    assert m.preprocess_cfg["mean"] == [0.5, 0.5, 0.5] and m.align_cfg["init"] == f"{variant}_imagenet"


def test_lite_weights_of_another_variant_do_not_load():
    import timm

    from gaudi_engine.models.lite_weights import load_lite_imagenet

    trunk = timm.create_model("efficientnet_lite0", num_classes=0)
    before = trunk.conv_head.weight.clone()
    with pytest.raises(GaudiError, match="efficientnet_lite2 ImageNet weights do not fit the trunk"):
        load_lite_imagenet(trunk, "lite2_imagenet")
    assert torch.equal(trunk.conv_head.weight, before)  # nothing half-loaded


@pytest.mark.parametrize("name", ["gaudi-tiny", "gaudi-lite0", "gaudi-lite2"])
def test_eval_dense_features_skip_unused_stages(name, tmp_path):
    """In eval mode dense_features stops the trunk after its last dense level: the same numbers as
    running every stage (train mode runs them all: their BatchNorm statistics train)."""
    from gaudi_engine.models.checkpoint import load_align, save_checkpoint
    from gaudi_engine.train.align import align_payload

    torch.manual_seed(0)
    m = create_align_model(name, pretrained="none", image_size=64)
    # gaudi-lite0/2 through a checkpoint: the lean towers' stop_early too
    m = load_align(save_checkpoint(tmp_path / "m.pt", align_payload(m, ["sky"], {}))).model
    m.eval()
    x = torch.randn(2, 3, 64, 96)
    calls = []
    trunk = m.clip.visual.trunk
    real = trunk.forward_intermediates
    trunk.forward_intermediates = lambda *a, **k: calls.append(k) or real(*a, **k)
    with torch.no_grad():
        fast = m.dense_features(x)
        feats = real(x, intermediates_only=True)
        full = torch.nn.functional.normalize(m.dense_head([feats[i] for i in m._dense_levels]).float(), dim=1)
    assert calls and calls[0].get("stop_early") and max(m._dense_levels) < len(feats) - 1
    assert torch.equal(fast, full)
