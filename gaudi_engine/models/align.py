"""AlignModel: an open_clip image–text model turned dense. The image tower yields per-pixel
features in the joint space; a tag's text embedding (mean over its descriptions) dotted with them
is the tag's similarity map, pooled (LogSumExp) into an image-level logit for the multi-label
sigmoid loss of Stage A. Learnable background embedding(s) live in the same space.

Towers: any timm trunk with `forward_intermediates` (FPN-lite fusion of its stride-8/16/32 maps,
so 128–192 px images keep a 16–24 px grid) and open_clip's ViT (patch tokens through a
MaskCLIP-style last block: value path only, no query–key mixing, which keeps tokens local).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as Fn
from torch import nn

from ..errors import GaudiError
from .text import build_tokenizer, description_texts


def spatial_pool(maps: torch.Tensor, how: str) -> torch.Tensor:
    """[B,K,h,w] -> [B,K]: "mean"; "lse:R" (LogSumExp at sharpness R, minus log N, over R: between
    mean and max); "topk:F" (mean of the top fraction F of pixels)."""
    flat = maps.flatten(2)
    kind, _, arg = how.partition(":")
    if kind == "mean":
        return flat.mean(-1)
    if kind == "lse":
        r = float(arg or 10)
        return (torch.logsumexp(r * flat, -1) - math.log(flat.shape[-1])) / r
    if kind == "topk":
        k = max(1, int(round(flat.shape[-1] * float(arg or 0.05))))
        return flat.topk(k, -1).values.mean(-1)
    raise GaudiError(f"unknown spatial pooling {how!r} (mean, lse:R or topk:F)")


class _FPNLite(nn.Module):
    """Lateral 1×1 projections of a few trunk levels, summed at the finest one, then a 3×3 mix."""

    def __init__(self, in_channels: list[int], dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.mix = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim),
                                 nn.GELU(), nn.Conv2d(dim, dim, 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        x = self.lateral[0](feats[0])
        for lat, f in zip(self.lateral[1:], feats[1:]):
            x = x + Fn.interpolate(lat(f), size=size, mode="bilinear", align_corners=False)
        return self.mix(x)


class AlignModel(nn.Module):
    def __init__(self, clip: nn.Module, model_name: str, model_cfg: dict[str, Any],
                 preprocess_cfg: dict[str, Any], align_cfg: dict[str, Any] | None = None):
        super().__init__()
        self.clip = clip
        self.model_name = model_name
        self.model_cfg = model_cfg
        self.preprocess_cfg = dict(preprocess_cfg)
        # measured on SynthBooru (lite0, 200 images): stride-8 features alone (a smaller receptive
        # field) and a softer LogSumExp (r=2) localise as well as an FPN over 8/16/32 or r=8, cheaper
        cfg = {"n_background": 2, "pool": "lse", "lse_r": 2.0, "init_scale": 10.0, "init_bias": -1.0,
               "dense_strides": [8]}
        cfg.update(align_cfg or {})
        self.align_cfg = cfg
        dim = int(model_cfg["embed_dim"])
        self.embed_dim = dim
        visual = clip.visual
        if hasattr(visual, "trunk") and hasattr(visual.trunk, "forward_intermediates"):
            self.tower = "timm"
            info = visual.trunk.feature_info
            info = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
            self.trunk_channels = [int(d["num_chs"]) for d in info]
            self.trunk_strides = [int(d["reduction"]) for d in info]
            # the levels fused into dense features: stride 8, 16, 32 (else the last three)
            pick = [i for i, s in enumerate(self.trunk_strides) if s in cfg["dense_strides"]]
            self._dense_levels = pick or list(range(len(info)))[-3:]
            self.dense_head = _FPNLite([self.trunk_channels[i] for i in self._dense_levels], dim)
        elif hasattr(visual, "conv1") and hasattr(visual, "transformer") and hasattr(visual, "positional_embedding"):
            self.tower = "vit"
            if getattr(visual, "attn_pool", None) is not None or not hasattr(
                    visual.transformer.resblocks[-1].attn, "in_proj_weight"):
                raise GaudiError(f"model '{model_name}': ViT variant with attentional pooling or custom "
                                 f"attention is not supported for dense features")
            width = visual.conv1.out_channels
            patch = visual.conv1.kernel_size[0]
            n = len(visual.transformer.resblocks)
            self._vit_taps = sorted({max(0, n // 3 - 1), max(0, 2 * n // 3 - 1), n - 1})
            self.trunk_channels = [width] * len(self._vit_taps)
            self.trunk_strides = [patch] * len(self._vit_taps)
            self.dense_head = nn.Identity()
        else:
            raise GaudiError(f"model '{model_name}': its image tower ({type(visual).__name__}) is not "
                             f"supported for dense features; use a timm- or ViT-based model")
        self.background = nn.Parameter(torch.randn(int(cfg["n_background"]), dim) * 0.02)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(float(cfg["init_scale"]))))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg["init_bias"])))
        # a tag's prior (how often it is present) read from its text embedding, so it stays open
        # vocabulary; without it the only way to fit frequent vs rare tags is to bend S itself
        self.text_prior = nn.Linear(dim, 1)
        nn.init.zeros_(self.text_prior.weight)
        nn.init.zeros_(self.text_prior.bias)
        self._tokenizer = None

    # -- image side ------------------------------------------------------------------------------
    def trunk_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale maps (fine → coarse) for a decoder; see `.trunk_channels/.trunk_strides`."""
        if self.tower == "timm":
            return list(self.clip.visual.trunk.forward_intermediates(x, intermediates_only=True))
        tokens, _ = self._vit_tokens(x, taps=self._vit_taps)
        return tokens

    def dense_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B,D,h,w], L2-normalised over D."""
        if self.tower == "timm" and self.training:
            feats = self.trunk_features(x)  # every stage: their BatchNorm statistics train too
            f = self.dense_head([feats[i] for i in self._dense_levels])
        elif self.tower == "timm":  # eval: the stages after the last dense level are not computed
            feats = self.clip.visual.trunk.forward_intermediates(x, indices=list(self._dense_levels), stop_early=True,
                                                                 intermediates_only=True)
            f = self.dense_head(list(feats))
        else:
            _, f = self._vit_tokens(x, taps=[])
        return Fn.normalize(f.float(), dim=1)

    def _vit_pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        v = self.clip.visual
        pe = v.positional_embedding
        cls, grid = pe[:1], pe[1:]
        n = int(round(math.sqrt(grid.shape[0])))
        if n * n == grid.shape[0] and (gh, gw) != (n, n):
            grid = grid.reshape(1, n, n, -1).permute(0, 3, 1, 2)
            grid = Fn.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
            grid = grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)
        return torch.cat([cls, grid], 0)

    def _vit_tokens(self, x: torch.Tensor, taps: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(maps after the tapped blocks [B,W,gh,gw], dense joint-space features [B,D,gh,gw])."""
        v = self.clip.visual
        x = v.conv1(x)
        b, w, gh, gw = x.shape
        x = x.reshape(b, w, gh * gw).permute(0, 2, 1)
        x = torch.cat([v.class_embedding.to(x.dtype).expand(b, 1, w), x], 1)
        x = v.ln_pre(x + self._vit_pos_embed(gh, gw).to(x.dtype))
        blocks = v.transformer.resblocks
        taps_out = []
        for i, blk in enumerate(blocks[:-1]):
            x = blk(x)
            if i in taps:
                taps_out.append(x[:, 1:].transpose(1, 2).reshape(b, w, gh, gw))
        last = blocks[-1]
        if len(blocks) - 1 in taps:
            y = last(x)
            taps_out.append(y[:, 1:].transpose(1, 2).reshape(b, w, gh, gw))
        # MaskCLIP last block: each token's own value, projected (no attention mixing, no MLP)
        attn = last.attn
        h = last.ln_1(x)
        wv = attn.in_proj_weight[2 * w:]
        bv = attn.in_proj_bias[2 * w:] if attn.in_proj_bias is not None else None
        t = attn.out_proj(Fn.linear(h, wv, bv))
        t = v.ln_post(t[:, 1:])
        if v.proj is not None:
            t = t @ v.proj
        return taps_out, t.transpose(1, 2).reshape(b, -1, gh, gw)

    # -- text side -------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = build_tokenizer(self.model_cfg)
        return self._tokenizer

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """[N,D], normalised."""
        return self.encode_tokens(self.tokenizer(list(texts)))

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N,D], normalised, from already tokenized texts (training pre-tokenizes once)."""
        return Fn.normalize(self.clip.encode_text(tokens.to(self.logit_scale.device)).float(), dim=-1)

    @staticmethod
    def mean_by_owner(emb: torch.Tensor, owner: torch.Tensor, k: int) -> torch.Tensor:
        """[k,D]: normalised mean of the rows of `emb` that belong to each of k tags."""
        summed = torch.zeros(k, emb.shape[1], device=emb.device, dtype=emb.dtype)
        return Fn.normalize(summed.index_add(0, owner.to(emb.device), emb), dim=-1)

    def tag_embeddings(self, descs: dict[str, list[str]], tags: list[str]) -> torch.Tensor:
        """[K,D]: each tag's normalised mean of its descriptions' embeddings (prompt ensembling);
        a tag without descriptions uses its own name."""
        texts, owner = [], []
        for k, tag in enumerate(tags):
            for t in description_texts(descs, tag):
                texts.append(t)
                owner.append(k)
        return self.mean_by_owner(self.encode_texts(texts), torch.tensor(owner), len(tags))

    # -- similarity and pooling ------------------------------------------------------------------
    @staticmethod
    def similarity(F: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        """Cosine maps [B,K,h,w] between dense features [B,D,h,w] and embeddings [K,D] (or [B,K,D])."""
        T = Fn.normalize(T.to(F.dtype), dim=-1)
        if T.dim() == 3:
            return torch.einsum("bdhw,bkd->bkhw", F, T)
        return torch.einsum("bdhw,kd->bkhw", F, T)

    def background_similarity(self, F: torch.Tensor) -> torch.Tensor:
        """[B,1,h,w]: the best of the background embeddings at each pixel."""
        return self.similarity(F, self.background).amax(1, keepdim=True)

    def tag_prior(self, T: torch.Tensor) -> torch.Tensor:
        """[K] (or [B,K] for T [B,K,D]): each tag's text-predicted logit offset."""
        return self.text_prior(T.float()).squeeze(-1)

    def pixel_logits(self, S: torch.Tensor, T: torch.Tensor | None = None) -> torch.Tensor:
        """Per-pixel logits on the same scale as the pooled ones (pooling them with LogSumExp gives
        the pooled logit). Pass T to include each tag's prior: needed to compare tags at a pixel."""
        z = self.logit_scale.exp() * S + self.logit_bias
        if T is not None:
            prior = self.tag_prior(T)
            z = z + (prior[None, :, None, None] if prior.dim() == 1 else prior[:, :, None, None])
        return z

    def pool_logits(self, S: torch.Tensor, T: torch.Tensor | None = None) -> torch.Tensor:
        """[B,K]: LogSumExp (or top-k mean) pooling, then learnable scale + bias (SigLIP-style);
        with the tags' embeddings T [K,D] also each tag's text-predicted prior (as in training)."""
        how = "topk:0.1" if self.align_cfg["pool"] == "topk" else f"lse:{float(self.align_cfg['lse_r'])}"
        pooled = spatial_pool(S.float(), how)
        logits = self.logit_scale.exp() * pooled + self.logit_bias
        if T is not None:
            logits = logits + self.tag_prior(T).to(logits.dtype)
        return logits

    def forward(self, x: torch.Tensor, T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(similarity maps [B,K,h,w], pooled logits [B,K])."""
        S = self.similarity(self.dense_features(x), T)
        return S, self.pool_logits(S, T)

    def export_config(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild this model with nothing else."""
        return {"model_name": self.model_name, "model_cfg": self.model_cfg,
                "align_cfg": dict(self.align_cfg), "preprocess": dict(self.preprocess_cfg)}
