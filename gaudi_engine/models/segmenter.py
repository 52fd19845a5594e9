"""Stage B: a text-conditioned segmenter.

The image encoder is Stage A's tower (`AlignModel.trunk_features`, multi-scale maps); a light
FPN decoder fuses them top-down, a small stride-4 stem from the raw pixels sharpens edges, and a
1x1 head maps every pixel into the joint text space. A tag's logit map is the (scaled) dot
product of those pixel embeddings with the tag's text embedding plus a bias, so any tag with a
description works (open vocabulary), all requested tags share ONE backbone pass, and tags are
never exclusive (one sigmoid per tag).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)  # batch-size independent (tiny batches, DDP)


class TextSegmenter(nn.Module):
    def __init__(self, align: nn.Module, dec_dim: int = 64, stem_dim: int = 16):
        super().__init__()
        self.align = align
        chans = list(align.trunk_channels)
        self.embed_dim = int(align.background.shape[-1])
        self.lateral = nn.ModuleList(nn.Conv2d(c, dec_dim, 1) for c in chans)
        self.fuse = nn.Sequential(nn.Conv2d(dec_dim, dec_dim, 3, padding=1), _norm(dec_dim), nn.ReLU(inplace=True))
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_dim, 3, stride=2, padding=1), _norm(stem_dim), nn.ReLU(inplace=True),
            nn.Conv2d(stem_dim, stem_dim, 3, stride=2, padding=1), _norm(stem_dim), nn.ReLU(inplace=True))
        self.refine = nn.Sequential(
            nn.Conv2d(dec_dim + stem_dim, dec_dim, 3, padding=1), _norm(dec_dim), nn.ReLU(inplace=True),
            nn.Conv2d(dec_dim, dec_dim, 3, padding=1), _norm(dec_dim), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(dec_dim, self.embed_dim, 1)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-2.0))
        self.cfg = {"dec_dim": dec_dim, "stem_dim": stem_dim}

    def pixel_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D, H/4, W/4] L2-normalised pixel embeddings (the one backbone pass)."""
        feats = self.align.trunk_features(x)
        y = None
        for f, lat in sorted(zip(feats, self.lateral), key=lambda p: p[0].shape[-1]):
            z = lat(f)  # coarsest first, top-down
            y = z if y is None else z + F.interpolate(y, size=z.shape[-2:], mode="bilinear", align_corners=False)
        y = self.fuse(y)
        s = self.stem(x)
        y = F.interpolate(y, size=s.shape[-2:], mode="bilinear", align_corners=False)
        y = self.refine(torch.cat([y, s], 1))
        return F.normalize(self.head(y), dim=1)

    def logits_from(self, emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """emb [B,D,h,w] x text [K,D] (or [B,K,D]) -> logits [B,K,h,w]."""
        text = F.normalize(text.to(emb.dtype), dim=-1)
        if text.dim() == 2:
            s = torch.einsum("bdhw,kd->bkhw", emb, text)
        else:
            s = torch.einsum("bdhw,bkd->bkhw", emb, text)
        return s * self.logit_scale.exp().clamp(max=100.0) + self.logit_bias

    def forward(self, x: torch.Tensor, text: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        logits = self.logits_from(self.pixel_embeddings(x), text)
        if out_size is not None:
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits

    def probabilities(self, x: torch.Tensor, text: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[B,K,*size] sigmoid probabilities, the logits resized to `size` (an image's own (h, w))."""
        return torch.sigmoid(self(x, text, out_size=size).float())


@dataclass
class SegmenterBundle:
    model: TextSegmenter
    config: dict
    preprocess: dict
    vocab: list[str]
    text_emb: torch.Tensor
    descriptions: dict


def segmenter_payload(model: TextSegmenter, base: dict) -> dict:
    """Checkpoint payload: the align payload's metadata (model_cfg, preprocess, vocab, text_emb,
    descriptions...) with kind "segmenter", the decoder's config and the full state dict."""
    payload = {k: v for k, v in base.items() if k not in ("state_dict", "optimizer")}
    payload.update(kind="segmenter", seg_cfg=dict(model.cfg),
                   state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()})
    return payload


def load_segmenter(path, device: str = "cpu") -> SegmenterBundle:
    """Rebuild a TextSegmenter from its checkpoint (weights_only; GaudiError when unusable)."""
    from ..errors import GaudiError
    from .checkpoint import align_model_from_payload, load_checkpoint

    payload = load_checkpoint(path)
    if payload.get("kind") != "segmenter":
        raise GaudiError(f"{path} is a {payload.get('kind', 'unknown')!r} checkpoint, not a segmenter")
    align = align_model_from_payload(payload)
    seg_cfg = payload.get("seg_cfg") or {}
    model = TextSegmenter(align, **seg_cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise GaudiError(f"segmenter checkpoint {path} does not match its model: {str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    return SegmenterBundle(model=model, config=payload.get("train_config") or {},
                           preprocess=payload.get("preprocess") or {}, vocab=list(payload.get("vocab") or []),
                           text_emb=payload.get("text_emb"), descriptions=payload.get("descriptions") or {})
