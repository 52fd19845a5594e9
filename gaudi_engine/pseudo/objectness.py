"""Objectness from the ImageNet trunk, for the tags an image-level label cannot localise.

A tag on (nearly) every picture (`1girl`, `solo`, `hair` on photos of people) has almost no
negative images, so Stage A never learns where it is *not*: its map follows whatever else is
untagged and paints the background (BENCHMARKS.md, session 10). Such a tag is something the
picture is about, and an ImageNet-trained trunk already knows where the objects of a picture are:
the strength of its deepest features, summed over channels, is high on objects and low on plain
surroundings (SCDA, Wei et al. 2017, localises the main object this way with no labels at all).
Those tags' maps are weighted by it. It is read at `zoom` x the model input because the deepest
level has stride 32, too coarse at the model's own size."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ubiquitous_tags(tag_lists: list[list[str]], share: float | None) -> set[str]:
    """Tags on at least `share` of the posts (None: none): too few negatives to localise."""
    if share is None or not tag_lists:
        return set()
    counts: dict[str, int] = {}
    for tags in tag_lists:
        for t in set(tags):
            counts[t] = counts.get(t, 0) + 1
    return {t for t, n in counts.items() if n >= share * len(tag_lists)}


@torch.no_grad()
def objectness(model, x: torch.Tensor, grid: tuple[int, int], zoom: float = 2.0) -> torch.Tensor:
    """[gh, gw] in [0, 1] for one model input x [3,H,W]: the L2 norm of the trunk's deepest
    features (an align model's `clip.visual.trunk`), min-max scaled over the input."""
    trunk = model.clip.visual.trunk
    size = tuple(max(32, int(round(n * zoom / 32)) * 32) for n in x.shape[-2:])
    xs = F.interpolate(x.unsqueeze(0).float(), size=size, mode="bilinear", align_corners=False)
    norm = trunk.forward_features(xs)[0].float().norm(dim=0)
    norm = (norm - norm.min()) / (norm.max() - norm.min()).clamp(min=1e-6)
    return F.interpolate(norm[None, None], size=grid, mode="bilinear", align_corners=False)[0, 0]
