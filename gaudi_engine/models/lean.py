"""The towers of `gaudi-lite0` / `gaudi-lite2` (timm's efficientnet_lite0 / _lite2 image trunk,
open_clip's plain text transformer) rebuilt from torch.nn alone, for loading checkpoints without
importing open_clip.

Why: `import open_clip` costs ~4 s on a 2-core machine, and almost all of it is not open_clip:
open_clip.utils imports torchvision, so does timm.layers, and torchvision.ops imports
torch._dynamo (~2.2 s), plus timm's registry of every architecture (~0.9 s). A CLI `gaudi infer`
of one image would spend most of its time there. These modules have the same parameter and
buffer names, order and shapes as open_clip's CLIP with a TimmModel tower (a checkpoint loads
with strict=True into either), and run the same torch ops in the same order, so outputs are
bit-identical in eval and in train mode (tests/models/test_lean.py checks both against
open_clip + timm). Training a new model still goes through open_clip (`create_align_model`);
only models rebuilt from a checkpoint use these (`build_clip(cfg, lean=True)`), and only for
configs `supports` accepts — anything else falls back to open_clip.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import lite_family

# timm's efficientnet_lite* trunks this module rebuilds (their stages: models/lite_family.py)
TRUNKS = {name: {"arch": lite_family.stages(name), "stem": lite_family.STEM_CHANNELS,
                 "num_features": lite_family.HEAD_CHANNELS} for name in lite_family.MULTIPLIERS}

# the config keys these towers implement, with the values they implement (None: any value)
_TOP = {"embed_dim": None, "vision_cfg": None, "text_cfg": None, "custom_text": False, "quick_gelu": False,
        "init_logit_scale": None, "init_logit_bias": None, "nonscalar_logit_scale": False}
_VISION = {"timm_model_name": None, "image_size": None, "timm_model_pretrained": None, "timm_pool": "avg",
           "timm_proj": "linear", "timm_proj_bias": False, "timm_drop": 0.0, "timm_drop_path": None,
           "patch_dropout": 0.0}
_TEXT = {"context_length": None, "vocab_size": None, "width": None, "heads": None, "layers": None,
         "tokenizer_kwargs": None, "hf_tokenizer_name": None, "mlp_ratio": None, "eos_id": None, "pad_id": None,
         "hf_model_name": None, "embed_cls": False, "no_causal_mask": False, "pool_type": "argmax",
         "proj_type": "linear", "proj_bias": False, "output_tokens": False, "ls_init_value": None,
         "norm_kwargs": {}, "act_kwargs": None, "block_type": None, "qk_norm": False, "scaled_cosine_attn": False,
         "scale_heads": False, "scale_attn_inner": False, "scale_attn": False, "scale_fc": False}
_MUST_BE_NONE = {"init_logit_bias", "hf_model_name", "ls_init_value", "act_kwargs", "block_type"}


def _fits(cfg: dict[str, Any], allowed: dict[str, Any]) -> bool:
    for k, v in cfg.items():
        if k not in allowed:
            return False
        if k in _MUST_BE_NONE or k == "timm_drop_path":
            if (v is not None) if k in _MUST_BE_NONE else bool(v):  # a drop path of 0 is none
                return False
        elif allowed[k] is not None and v != allowed[k]:
            return False
    return True


def supports(model_cfg: dict[str, Any]) -> bool:
    """True when the config is one these towers rebuild exactly (else: use open_clip)."""
    vis, txt = model_cfg.get("vision_cfg") or {}, model_cfg.get("text_cfg") or {}
    return (vis.get("timm_model_name") in TRUNKS and _fits(model_cfg, _TOP) and _fits(vis, _VISION)
            and _fits(txt, _TEXT))


# -- image tower: timm's EfficientNet (lite: ReLU6, no squeeze-excite) -------------------------------
class BatchNormAct2d(nn.BatchNorm2d):
    """timm's BatchNormAct2d: BatchNorm2d, then (dropout: none here) an activation."""

    def __init__(self, num_features: int, act: bool = True, device=None):
        super().__init__(num_features, device=device)
        self.drop = nn.Identity()
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, device=None) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=((stride - 1) + (k - 1)) // 2, groups=groups, bias=False,
                     device=device)  # timm's symmetric padding


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, device=None):
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = _conv(cin, cin, k, stride, groups=cin, device=device)
        self.bn1 = BatchNormAct2d(cin, device=device)
        self.aa = nn.Identity()
        self.se = nn.Identity()
        self.conv_pw = _conv(cin, cout, 1, device=device)
        self.bn2 = BatchNormAct2d(cout, act=False, device=device)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_pw(self.se(self.aa(self.bn1(self.conv_dw(x)))))
        x = self.bn2(x)
        return self.drop_path(x) + shortcut if self.has_skip else x


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, device=None):
        super().__init__()
        mid = cin * expand
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = _conv(cin, mid, 1, device=device)
        self.bn1 = BatchNormAct2d(mid, device=device)
        self.conv_dw = _conv(mid, mid, k, stride, groups=mid, device=device)
        self.bn2 = BatchNormAct2d(mid, device=device)
        self.aa = nn.Identity()
        self.se = nn.Identity()
        self.conv_pwl = _conv(mid, cout, 1, device=device)
        self.bn3 = BatchNormAct2d(cout, act=False, device=device)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn1(self.conv_pw(x))
        x = self.se(self.aa(self.bn2(self.conv_dw(x))))
        x = self.bn3(self.conv_pwl(x))
        return self.drop_path(x) + shortcut if self.has_skip else x


class EfficientNetTrunk(nn.Module):
    """timm's EfficientNet with `num_classes=0` (as open_clip's TimmModel builds it with a linear
    projection): conv_stem, bn1, blocks (one Sequential per stage), conv_head, bn2, avg pool."""

    def __init__(self, name: str, device=None):
        super().__init__()
        spec = TRUNKS[name]
        self.conv_stem = _conv(3, spec["stem"], 3, 2, device=device)
        self.bn1 = BatchNormAct2d(spec["stem"], device=device)
        stages, cin, reduction, info = [], spec["stem"], 2, []
        for i, (kind, reps, k, stride, expand, cout) in enumerate(spec["arch"]):
            blocks = []
            for r in range(reps):
                s = stride if r == 0 else 1
                blocks.append(DepthwiseSeparableConv(cin, cout, k, s, device) if kind == "ds"
                              else InvertedResidual(cin, cout, k, s, expand, device))
                cin = cout
            stages.append(nn.Sequential(*blocks))
            reduction *= stride
            # timm's feature_info: the last stage of each reduction
            if i + 1 == len(spec["arch"]) or spec["arch"][i + 1][3] > 1:
                info.append({"stage": i + 1, "reduction": reduction, "module": f"blocks.{i}", "num_chs": cout})
        self.blocks = nn.Sequential(*stages)
        self.num_features = spec["num_features"]
        self.conv_head = _conv(cin, self.num_features, 1, device=device)
        self.bn2 = BatchNormAct2d(self.num_features, device=device)
        self.feature_info = info
        self.stage_ends = [d["stage"] for d in info]

    def forward_intermediates(self, x: torch.Tensor, indices=None, stop_early: bool = False,
                              intermediates_only: bool = False):
        """As timm's (NCHW, every feature_info level unless `indices` picks some): the stem's and
        the reduction stages' outputs; with `intermediates_only=False` also the head's output;
        `stop_early`: no stage after the last one picked."""
        n = len(self.stage_ends)
        if indices is None:
            pick = list(range(n))
        elif isinstance(indices, int):
            pick = list(range(n - indices, n))
        else:
            pick = [i if i >= 0 else n + i for i in indices]
        take = {self.stage_ends[i] for i in pick}
        out = []
        x = self.bn1(self.conv_stem(x))
        if 0 in take:
            out.append(x)
        feat_idx = 0
        blocks = list(self.blocks)[:max(take, default=0)] if stop_early else self.blocks
        for feat_idx, blk in enumerate(blocks, start=1):
            x = blk(x)
            if feat_idx in take:
                out.append(x)
        if intermediates_only:
            return out
        if feat_idx == self.stage_ends[-1]:
            x = self.bn2(self.conv_head(x))
        return x, out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.forward_features(x), 1).flatten(1)  # timm's avg pool


class TimmTower(nn.Module):
    """open_clip's TimmModel with `timm_pool="avg"`, `timm_proj="linear"`: trunk, then head."""

    def __init__(self, name: str, embed_dim: int, image_size, device=None):
        super().__init__()
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.trunk = EfficientNetTrunk(name, device)
        proj = nn.Linear(self.trunk.num_features, embed_dim, bias=False, device=device)
        self.head = nn.Sequential(OrderedDict([("drop", nn.Dropout(0.0)), ("proj", proj)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


# -- text tower: open_clip's TextTransformer, folded into the CLIP as open_clip does ----------------
class LayerNorm(nn.LayerNorm):
    """open_clip's LayerNorm: the result cast back to the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig = x.dtype
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).to(orig)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, device=None):
        super().__init__()
        self.ln_1 = LayerNorm(width, device=device)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True, device=device)
        self.ls_1 = nn.Identity()
        self.ln_2 = LayerNorm(width, device=device)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, hidden, device=device)), ("gelu", nn.GELU()),
                                              ("c_proj", nn.Linear(hidden, width, device=device))]))
        self.ls_2 = nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = attn_mask.to(x.dtype) if attn_mask is not None else None
        h = self.ln_1(x)
        x = x + self.ls_1(self.attn(h, h, h, need_weights=False, attn_mask=mask)[0])
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, device=None):
        super().__init__()
        self.width, self.layers, self.batch_first = width, layers, True
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio, device) for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for blk in self.resblocks:
            x = blk(x, attn_mask=attn_mask)
        return x


class LeanCLIP(nn.Module):
    """open_clip's CLIP for a TimmModel image tower and a plain text transformer (same state dict)."""

    def __init__(self, embed_dim: int, vision_cfg: dict[str, Any], text_cfg: dict[str, Any], device=None):
        super().__init__()
        ctx, width = int(text_cfg.get("context_length", 77)), int(text_cfg.get("width", 512))
        # registration order as in open_clip: parameter order is what an optimizer's state follows
        self.visual = TimmTower(vision_cfg["timm_model_name"], embed_dim, vision_cfg.get("image_size", 224), device)
        self.transformer = Transformer(width, int(text_cfg.get("layers", 12)), int(text_cfg.get("heads", 8)),
                                       float(text_cfg.get("mlp_ratio", 4.0)), device)
        self.context_length = ctx
        self.vocab_size = int(text_cfg.get("vocab_size", 49408))
        # no init (weights come from a checkpoint); normal_ on the meta device would import torch._dynamo
        self.token_embedding = nn.Embedding(self.vocab_size, width,
                                            _weight=torch.empty(self.vocab_size, width, device=device))
        self.positional_embedding = nn.Parameter(torch.empty(ctx, width, device=device))
        self.ln_final = LayerNorm(width, device=device)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim, device=device))
        self.text_pool_type = "argmax"
        self.text_eos_id = int(text_cfg.get("eos_id", 2))
        # not in the state dict: made here, on the CPU even when the weights are on meta
        self.register_buffer("attn_mask", torch.full((ctx, ctx), float("-inf")).triu_(1), persistent=False)
        self.logit_scale = nn.Parameter(torch.empty((), device=device))
        self.logit_bias = None

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = self.visual(image)
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        dtype = self.transformer.resblocks[0].mlp.c_fc.weight.dtype if len(self.transformer.resblocks) else \
            self.token_embedding.weight.dtype
        x = self.token_embedding(text).to(dtype) + self.positional_embedding.to(dtype)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        x = x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)]  # the EOT token's features
        x = x @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x


def build_lean_clip(model_cfg: dict[str, Any], device="meta") -> LeanCLIP:
    """The model with no weights yet (`supports(model_cfg)` first): on the meta device by default,
    to be filled with `load_state_dict(checkpoint_state, assign=True)` (no allocation, no init, no
    copy); on a real device its weights are uninitialised memory until loaded."""
    return LeanCLIP(int(model_cfg["embed_dim"]), model_cfg["vision_cfg"], model_cfg["text_cfg"], device=device)
