"""models/lean.py rebuilds gaudi-lite0 and gaudi-lite2 without open_clip: the same state dict (names, order,
shapes) and bit-identical outputs and gradients, in eval and train mode, as open_clip + timm."""
import pytest
import torch

from gaudi_engine.models import lean
from gaudi_engine.models.registry import build_clip, model_config

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["gaudi-lite0", "gaudi-lite2"])
def pair(request):
    cfg = model_config(request.param)
    cfg["vision_cfg"]["timm_model_pretrained"] = False
    torch.manual_seed(0)
    ref = build_clip(cfg)  # open_clip + timm
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k, v in ref.state_dict().items():  # BatchNorm stats that are not the identity
            if k.endswith("running_var"):
                v.copy_(torch.rand(v.shape, generator=g) + 0.5)
            elif k.endswith("running_mean"):
                v.copy_(torch.randn(v.shape, generator=g) * 0.1)
    mine = build_clip(cfg, lean=True)
    assert isinstance(mine, lean.LeanCLIP) and next(mine.parameters()).is_meta
    mine.load_state_dict({k: v.clone() for k, v in ref.state_dict().items()}, strict=True, assign=True)
    return ref, mine


def test_config_support():
    cfg = model_config("gaudi-lite0")
    assert lean.supports(cfg) and lean.supports(model_config("gaudi-lite2"))
    assert not lean.supports(model_config("gaudi-tiny"))  # another timm trunk: open_clip builds it
    assert not lean.supports(model_config("gaudi-vit-tiny"))
    for change in ({"quick_gelu": True}, {"init_logit_bias": -10.0}, {"custom_text": True}):
        assert not lean.supports({**cfg, **change}), change
    assert not lean.supports({**cfg, "text_cfg": {**cfg["text_cfg"], "pool_type": "last"}})
    assert not lean.supports({**cfg, "vision_cfg": {**cfg["vision_cfg"], "timm_pool": "abs_attn"}})
    assert lean.supports({**cfg, "vision_cfg": {**cfg["vision_cfg"], "timm_drop_path": 0.0}})


def test_same_state_dict_and_parameter_order(pair):
    ref, mine = pair
    assert list(mine.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in mine.named_parameters()] == [n for n, _ in ref.named_parameters()]  # optimizer state
    assert all(mine.state_dict()[k].shape == v.shape for k, v in ref.state_dict().items())
    assert mine.visual.trunk.feature_info == list(ref.visual.trunk.feature_info)
    assert mine.visual.trunk.stage_ends == ref.visual.trunk.stage_ends
    assert [b.has_skip for s in mine.visual.trunk.blocks for b in s] == \
           [b.has_skip for s in ref.visual.trunk.blocks for b in s]
    assert torch.equal(mine.attn_mask, ref.attn_mask)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_bit_identical_outputs_and_grads(pair, mode):
    ref, mine = pair
    ref.train(mode == "train")
    mine.train(mode == "train")
    torch.manual_seed(2)
    x = torch.randn(2, 3, 96, 128)
    tok = torch.randint(1, 49000, (3, 32))
    tok[:, 9] = 49407  # the EOT token (argmax pooling)
    a = mine.visual.trunk.forward_intermediates(x, intermediates_only=True)
    b = ref.visual.trunk.forward_intermediates(x, intermediates_only=True)
    assert len(a) == len(b) == 5 and all(torch.equal(u, v) for u, v in zip(a, b))
    for ind in (2, [1, -1]):
        (fa, ia), (fb, ib) = (mine.visual.trunk.forward_intermediates(x, indices=ind),
                              ref.visual.trunk.forward_intermediates(x, indices=ind))
        assert torch.equal(fa, fb) and len(ia) == len(ib) and all(torch.equal(u, v) for u, v in zip(ia, ib))
    a = mine.visual.trunk.forward_intermediates(x, indices=[2], stop_early=True, intermediates_only=True)
    b = ref.visual.trunk.forward_intermediates(x, indices=[2], stop_early=True, intermediates_only=True)
    assert len(a) == len(b) == 1 and torch.equal(a[0], b[0])
    with torch.no_grad():
        assert torch.equal(mine.encode_text(tok), ref.encode_text(tok))  # the no-grad fast attention path
    la = mine.encode_text(tok).square().sum() + mine.encode_image(x).square().sum()
    lb = ref.encode_text(tok).square().sum() + ref.encode_image(x).square().sum()
    assert torch.equal(la, lb)
    la.backward()
    lb.backward()
    grads = [(p.grad, q.grad) for p, q in zip(mine.parameters(), ref.parameters())]
    assert sum(g is not None for g, _ in grads) == sum(g is not None for _, g in grads) > 100
    assert all((g is None and h is None) or torch.equal(g, h) for g, h in grads)
    mine.zero_grad(set_to_none=True)
    ref.zero_grad(set_to_none=True)
    # train mode updated the BatchNorm running stats alike
    assert all(torch.equal(u, v) for u, v in zip(mine.state_dict().values(), ref.state_dict().values()))


def test_standalone_tokenizer_gives_open_clip_tokens():
    import open_clip

    from gaudi_engine.models.text import _standalone_tokenizer

    mod = _standalone_tokenizer()
    assert mod.__name__ != "open_clip.tokenizer"
    texts = ["a blue sky above", "Café déjà-vu: 1girl, long_hair!!", ""]
    ours = mod.SimpleTokenizer(context_length=32)(texts)
    assert torch.equal(ours, open_clip.tokenizer.SimpleTokenizer(context_length=32)(texts))
