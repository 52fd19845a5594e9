"""Stage A: multi-label image–text alignment (DESIGN §6).

Every step, the text tower embeds the descriptions of the step's tags (all vocabulary tags, or the
batch's positives plus sampled negatives when the vocabulary is large); a tag's embedding is the
normalised mean over its descriptions (prompt ensembling). Dense image features dotted with them
give similarity maps S_k, pooled by LogSumExp into logits with a learnable SigLIP-style scale and
bias, trained with a sigmoid (BCE) loss over the whole step vocabulary (positives = the image's
tags). Background embeddings learn to be high where no present tag's pixel logit is: a per-pixel
BCE towards 1 - max_k∈present σ(pixel logit_k) (targets detached), which the pseudo-labeller uses
as the "background" competitor in its softmax.

Pixel competition (`excl_weight`): a softmax over the step's tags + background at every pixel,
pooled per tag over its top 2% pixels (`excl_pool`), BCE against the image's tags: a present tag
must clearly win some pixels, an absent one none. Mean pooling here (each present tag must win
*area*) made small things claim their surroundings; top-2% pooling raised the demo-size segmenter
from 0.37 to 0.45 mIoU (top 5%: 0.42; BENCHMARKS.md).
`excl_background` (off by default) adds background as a tag every picture has, pooled the same way:
it taught `1girl`-on-every-picture where she is not on SynthBooru, and lost on ccp-dev's photos
(BENCHMARKS.md, session 10).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as Fn

from ..errors import GaudiError
from ..models.align import spatial_pool
from ..models.registry import DEFAULT_MODEL, create_align_model
from ..models.text import description_texts
from ..imaging import cache_for
from .data import TagImageDataset, build_vocab, load_tag_descriptions, read_manifest, warn_missing_descriptions
from .loop import TrainConfig, resolve_device, saved_config, train_loop

log = logging.getLogger(__name__)

DEFAULTS = {  # tuned so ~500 SynthBooru images train in a few minutes on 2 CPU cores
    "epochs": 14, "batch_size": 32, "lr": 2e-3, "image_size": None, "bg_weight": 0.5,
    "max_tags_per_step": 256, "trunk_lr_scale": 0.3, "rank_weight": 0.5, "excl_weight": 1.0, "excl_pool": "topk:0.02", "excl_background": None, "mosaic_p": 0.0,
    "align_cfg": {},  # AlignModel settings (pooling, dense levels, backgrounds)
}


def _pretokenize(model, descriptions: dict[str, list[str]], vocab: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    texts, owner = [], []
    for k, tag in enumerate(vocab):
        for t in description_texts(descriptions, tag):
            texts.append(t)
            owner.append(k)
    return model.tokenizer(texts), torch.tensor(owner)


def make_align_loss(tokens: torch.Tensor, owner: torch.Tensor, n_vocab: int, bg_weight: float = 0.5,
                    max_tags_per_step: int = 256, seed: int = 0, rank_weight: float = 0.5,
                    excl_weight: float = 0.0, excl_pool: str = "mean", excl_background: str | None = None):
    """loss_fn(model, batch) -> (loss, metrics) for train_loop."""
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(model, batch):
        x, y = batch["image"], batch["labels"]
        if n_vocab <= max_tags_per_step:
            idx = torch.arange(n_vocab)
        else:  # the batch's positives + random negatives: the text tower cost stays bounded
            pos = torch.nonzero(y.sum(0) > 0).flatten().cpu()
            rest = torch.ones(n_vocab, dtype=torch.bool)
            rest[pos] = False
            cand = torch.nonzero(rest).flatten()
            n_neg = max(0, max_tags_per_step - len(pos))
            idx = torch.cat([pos, cand[torch.randperm(len(cand), generator=gen)[:n_neg]]]).sort().values
        if len(idx) == n_vocab:
            sel_tokens, sel_owner = tokens, owner
        else:
            remap = torch.full((n_vocab,), -1, dtype=torch.long)
            remap[idx] = torch.arange(len(idx))
            keep = remap[owner] >= 0
            sel_tokens, sel_owner = tokens[keep], remap[owner[keep]]
        T = model.mean_by_owner(model.encode_tokens(sel_tokens), sel_owner, len(idx))
        F = model.dense_features(x)
        S = model.similarity(F, T)
        logits = model.pool_logits(S, T)
        yk = y[:, idx.to(y.device)].float()
        cls = Fn.binary_cross_entropy_with_logits(logits, yk)
        loss, metrics = cls, {"cls": float(cls.detach())}
        if rank_weight > 0:  # softmax over the tags, target = the image's tags: ranks present above
            has = yk.sum(1) > 0  # absent and keeps the tags' text embeddings apart
            if has.any():
                rank = -(Fn.log_softmax(logits[has], 1) * (yk[has] / yk[has].sum(1, keepdim=True))).sum(1).mean()
                loss = loss + rank_weight * rank
                metrics["rank"] = float(rank.detach())
        if bg_weight > 0:
            scale, bias = model.logit_scale.exp().detach(), model.logit_bias.detach()
            with torch.no_grad():
                fg = (torch.sigmoid(model.pixel_logits(S, T)) * yk[:, :, None, None]).amax(1)
            z_bg = scale * model.background_similarity(F)[:, 0] + bias
            bg = Fn.binary_cross_entropy_with_logits(z_bg, 1.0 - fg)
            loss = loss + bg_weight * bg
            metrics["bg"] = float(bg.detach())
        if excl_weight > 0:  # pixels compete: a softmax over the tags + background at each pixel,
            # pooled by `excl_pool`: present tags must win some pixels, absent ones none
            z = torch.cat([model.pixel_logits(S, T), model.pixel_logits(model.background_similarity(F))], 1)
            p = torch.softmax(z.float(), 1)
            q = spatial_pool(p[:, :-1], excl_pool).clamp(1e-5, 1 - 1e-5)
            excl = -(yk * q.log() + (1 - yk) * (1 - q).log()).mean()
            if excl_background:  # every picture has pixels no tag claims: background must win its
                # surest ones, so a tag on every picture still learns where it is not
                q_bg = spatial_pool(p[:, -1:], excl_background).clamp(1e-5, 1 - 1e-5)
                excl = excl - q_bg.log().mean() / (yk.shape[1] + 1)
            loss = loss + excl_weight * excl
            metrics["excl"] = float(excl.detach())
        with torch.no_grad():
            p = yk > 0
            metrics["pos_logit"] = float(logits[p].mean()) if p.any() else 0.0
            metrics["neg_logit"] = float(logits[~p].mean()) if (~p).any() else 0.0
        return loss, metrics

    # the negatives' generator goes into last.pt with the rest of the run's RNG (`train.loop`), so a
    # resumed run samples what an uninterrupted one would
    loss_fn.state_dict = lambda: {"negatives_rng": gen.get_state()}
    loss_fn.load_state_dict = lambda st: gen.set_state(st["negatives_rng"])
    return loss_fn


def align_payload(model, vocab: list[str], descriptions: dict[str, list[str]]) -> dict[str, Any]:
    """The Stage A checkpoint: model + everything infer needs (vocab, final text embeddings)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        text_emb = model.tag_embeddings(descriptions, vocab).float().cpu() if vocab else torch.zeros(0, model.embed_dim)
    model.train(was)
    return {"kind": "align", **model.export_config(), "state_dict": model.state_dict(), "vocab": list(vocab),
            "text_emb": text_emb, "descriptions": {t: list(descriptions.get(t, [])) for t in vocab}}


def train_align(manifest: str | os.PathLike, tag_desc: str | os.PathLike | None, out: str | os.PathLike, *,
                model_name: str = DEFAULT_MODEL, pretrained: str | None = None, image_size: int | None = None,
                epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
                device: str = "auto", resume: bool = False, seed: int = 0, workers: int = 0,
                max_steps: int | None = None, log_every: int = 10, bg_weight: float | None = None,
                workspace_root: str | os.PathLike | None = None, save_minutes: float = 10.0) -> dict[str, Any]:
    """Run Stage A; returns train_loop's summary plus vocab size and image counts."""
    extra = {"manifest": str(manifest), "tag_desc": str(tag_desc) if tag_desc else None, "model": model_name,
             "pretrained": pretrained, "image_size": image_size,
             "bg_weight": DEFAULTS["bg_weight"] if bg_weight is None else bg_weight,
             "max_tags_per_step": DEFAULTS["max_tags_per_step"], "trunk_lr_scale": DEFAULTS["trunk_lr_scale"],
             "rank_weight": DEFAULTS["rank_weight"], "excl_weight": DEFAULTS["excl_weight"],
             "excl_pool": DEFAULTS["excl_pool"], "excl_background": DEFAULTS["excl_background"],
             "mosaic_p": DEFAULTS["mosaic_p"], "align_cfg": dict(DEFAULTS["align_cfg"])}
    cfg = TrainConfig(out=str(out), epochs=epochs or DEFAULTS["epochs"], batch_size=batch_size or DEFAULTS["batch_size"],
                      lr=lr or DEFAULTS["lr"], device=device, seed=seed, workers=workers, resume=resume,
                      log_every=log_every, max_steps=max_steps, save_minutes=save_minutes, stage="train-align",
                      extra=extra)
    resolve_device(device)  # a bad --device fails before minutes of loading
    if resume:  # the run is rebuilt exactly as saved (nanoGPT-style): model, data, settings
        saved = saved_config(out)
        if saved is None:
            raise GaudiError(f"--resume: no checkpoint at {Path(out) / 'checkpoints' / 'last.pt'}"
                             " (a run stopped before its first checkpoint starts again without --resume)")
        extra = dict(saved.get("extra") or extra)
    records = read_manifest(extra["manifest"], workspace_root)
    descriptions = load_tag_descriptions(extra["tag_desc"])
    vocab = build_vocab(records)
    if not vocab:
        raise GaudiError("the manifest's posts carry no tags to learn")
    warn_missing_descriptions(vocab, descriptions)
    torch.manual_seed(seed)
    model = create_align_model(extra["model"], pretrained="none" if resume and extra["pretrained"] else extra["pretrained"],
                               image_size=extra["image_size"], **extra.get("align_cfg", {}))
    extra["image_size"] = model.preprocess_cfg["image_size"]
    dataset = TagImageDataset(records, vocab, model.preprocess_cfg, train=True, seed=seed,
                              mosaic_p=float(extra.get("mosaic_p", 0.0)), cache=cache_for(extra["manifest"]))
    tokens, owner = _pretokenize(model, descriptions, vocab)
    loss_fn = make_align_loss(tokens, owner, len(vocab), bg_weight=float(extra["bg_weight"]),
                              max_tags_per_step=int(extra["max_tags_per_step"]), seed=seed,
                              rank_weight=float(extra.get("rank_weight", DEFAULTS["rank_weight"])),
                              excl_weight=float(extra.get("excl_weight", DEFAULTS["excl_weight"])),
                              excl_pool=str(extra.get("excl_pool", "mean")),
                              excl_background=extra.get("excl_background"))
    pretrained_trunk = model.align_cfg.get("init") not in (None, "random")
    trunk_scale = float(extra["trunk_lr_scale"]) if pretrained_trunk else 1.0

    def lr_scale(name: str) -> float:  # a pretrained trunk moves slower than the fresh heads
        return trunk_scale if name.startswith("clip.visual.") else 1.0

    summary = train_loop(cfg, model, dataset, loss_fn,
                         make_payload=lambda m: align_payload(m, vocab, descriptions), lr_scale=lr_scale)
    summary.update(vocab_size=len(vocab), images=len(dataset), skipped_images=len(records) - len(dataset))
    return summary


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP of one tag: mean precision at each positive, ranking by score (NaN without positives)."""
    pos = labels.sum()
    if pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    prec = np.cumsum(hits) / (np.arange(len(hits)) + 1)
    return float((prec * hits).sum() / pos)


@torch.no_grad()
def evaluate_map(bundle, records: list[dict], batch_size: int = 32) -> dict[str, Any]:
    """Pooled-logit mAP of an align checkpoint over records (tags in its vocabulary only)."""
    vocab = bundle.vocab
    ds = TagImageDataset(records, vocab, bundle.preprocess, train=False)
    model, dev = bundle.model, bundle.text_emb.device
    scores = []
    by_shape: dict[tuple, list[int]] = {}  # canvases keep their pictures' aspects: batch alike ones
    for j in range(len(ds)):
        by_shape.setdefault(tuple(ds.images[j].shape), []).append(j)
    order = []
    for idx in by_shape.values():
        for i in range(0, len(idx), batch_size):
            part = idx[i:i + batch_size]
            x = torch.stack([ds[j]["image"] for j in part]).to(dev)
            S = model.similarity(model.dense_features(x), bundle.text_emb)
            scores.append(model.pool_logits(S, bundle.text_emb).float().cpu())
            order.extend(part)
    s = torch.cat(scores).numpy()[np.argsort(order)]
    y = ds.labels.numpy()
    aps = {t: average_precision(s[:, k], y[:, k]) for k, t in enumerate(vocab)}
    valid = [v for v in aps.values() if v == v]
    return {"mAP": float(np.mean(valid)) if valid else float("nan"), "per_tag": aps, "scores": s, "labels": y}
