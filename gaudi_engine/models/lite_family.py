"""The EfficientNet-Lite family as timm builds it (`_gen_efficientnet_lite`): one base stage table
scaled per variant by a width (channel) and a depth multiplier, with the stem (32), the head
(1280) and the first and last stages' depths fixed. The lean towers (models/lean.py) build the
trunk from these stages and the ImageNet weight mapping (models/lite_weights.py) numbers its
blocks by them, so both follow timm from one table. Only torch-free arithmetic here: the lean
path must not import timm."""
from __future__ import annotations

import math
from typing import NamedTuple


class Stage(NamedTuple):
    kind: str      # "ds": depthwise-separable block, "ir": inverted residual
    repeats: int
    kernel: int
    stride: int
    expand: int
    channels: int


# timm's efficientnet_lite arch_def (multipliers 1.0, i.e. efficientnet_lite0)
_BASE = [Stage("ds", 1, 3, 1, 1, 16), Stage("ir", 2, 3, 2, 6, 24), Stage("ir", 2, 5, 2, 6, 40),
         Stage("ir", 3, 3, 2, 6, 80), Stage("ir", 3, 5, 1, 6, 112), Stage("ir", 4, 5, 2, 6, 192),
         Stage("ir", 1, 3, 1, 6, 320)]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# timm name -> (channel multiplier, depth multiplier), as in timm's efficientnet.py
MULTIPLIERS = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite2": (1.1, 1.2)}


def _round_channels(channels: int, multiplier: float, divisor: int = 8) -> int:
    """timm's round_channels / make_divisible (nearest multiple of 8, never 10 % below)."""
    if not multiplier:
        return channels
    v = channels * multiplier
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


def stages(timm_name: str) -> list[Stage]:
    """The per-stage blocks of one Lite variant (timm's `blocks.S` order)."""
    width, depth = MULTIPLIERS[timm_name]
    last = len(_BASE) - 1
    return [s._replace(repeats=s.repeats if i in (0, last) else int(math.ceil(s.repeats * depth)),
                       channels=_round_channels(s.channels, width))
            for i, s in enumerate(_BASE)]


def stage_depths(timm_name: str) -> list[int]:
    return [s.repeats for s in stages(timm_name)]
