"""Stage A's `excl_background`: every picture has pixels no tag claims, so background must win its
surest pixels — a tag on every picture can no longer take them all (issue 15 item 4)."""
import torch

from gaudi_engine.models.align import spatial_pool
from gaudi_engine.models.registry import create_align_model
from gaudi_engine.train.align import make_align_loss

torch.set_num_threads(1)


def _setup():
    torch.manual_seed(0)
    model = create_align_model("gaudi-tiny", pretrained="none", image_size=64)
    tokens = model.tokenizer(["a girl", "a hat", "a dress"])
    owner = torch.arange(3)
    batch = {"image": torch.randn(4, 3, 64, 96), "labels": torch.tensor([[1, 1, 0], [1, 0, 1], [1, 0, 0], [1, 1, 1]])}
    return model, tokens, owner, batch


def _background_share(model, batch, tokens, owner) -> float:
    """Mean over the batch of background's top-5% pixel share in the pixel softmax."""
    with torch.no_grad():
        T = model.mean_by_owner(model.encode_tokens(tokens), owner, 3)
        F = model.dense_features(batch["image"])
        z = torch.cat([model.pixel_logits(model.similarity(F, T), T),
                       model.pixel_logits(model.background_similarity(F))], 1)
        return float(spatial_pool(torch.softmax(z.float(), 1)[:, -1:], "topk:0.05").mean())


def test_the_background_term_adds_to_the_loss_and_off_changes_nothing():
    model, tokens, owner, batch = _setup()
    model.eval()
    base = make_align_loss(tokens, owner, 3, excl_weight=1.0, excl_pool="topk:0.02")
    off = make_align_loss(tokens, owner, 3, excl_weight=1.0, excl_pool="topk:0.02", excl_background=None)
    on = make_align_loss(tokens, owner, 3, excl_weight=1.0, excl_pool="topk:0.02", excl_background="topk:0.05")
    l_base, m_base = base(model, batch)
    l_off, _ = off(model, batch)
    l_on, m_on = on(model, batch)
    assert torch.allclose(l_base, l_off)
    share = _background_share(model, batch, tokens, owner)
    # -log(share) / (K + 1), K = 3 tags this step: the background weighs as one more tag
    assert abs((m_on["excl"] - m_base["excl"]) - (-torch.log(torch.tensor(share)).item() / 4)) < 2e-3


def test_training_with_it_lets_background_win_where_a_tag_on_every_picture_did():
    shares = {}
    for name, pool in (("off", None), ("on", "topk:0.05")):
        model, tokens, owner, batch = _setup()
        loss_fn = make_align_loss(tokens, owner, 3, excl_weight=1.0, excl_pool="topk:0.02", excl_background=pool)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
        model.train()
        for _ in range(15):
            loss, _ = loss_fn(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        shares[name] = _background_share(model, batch, tokens, owner)
    assert shares["on"] > shares["off"] + 0.05, shares
