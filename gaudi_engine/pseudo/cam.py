"""Text-CAM: where in the image each present tag's text embedding matches the dense features.

CLIP-ES-style normalisation: per pixel, a tag's similarity goes through a softmax against the
learned background embeddings and the image's *competing* tags, so a tag claims the pixels it
explains better than anything else present. Tags are not exclusive (`dress` lies inside
`1girl`), so with `mode="nesting"` a parent never competes with its parts, while a part still
competes with its parent (that is what keeps `dress` on the dress rather than the whole girl);
`mode="all"` is the plain CLIP-ES softmax, `mode="background"` competes with background only.
Averaged over scales and a horizontal flip.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

CAM_MODES = ("nesting", "all", "background")


@dataclass
class CamConfig:
    scales: tuple[float, ...] = (1.0,)  # + flip; more scales cost a pass each
    flip: bool = True
    mode: str = "nesting"
    temperature: float | None = None  # None: the align model's own logit scale
    grid_mult: int = 2  # CAM grid = base feature grid x grid_mult (finer than stride 8)


@dataclass
class CamOutput:
    probs: torch.Tensor  # [K, gh, gw] competition-normalised maps, grid resolution
    views: torch.Tensor  # [V, K, gh, gw] the per-view maps (for the consistency validator)
    zoom: torch.Tensor  # [K] each tag's zoom factor
    zoom_feats: dict  # zoom -> [D, gh, gw] L2-normalised dense features of that zoom, same grid
    tags: list[str] = field(default_factory=list)

    @property
    def feats(self) -> torch.Tensor:
        """[D, gh, gw] the features of the unzoomed image (of the only zoom when none is 1)."""
        return self.zoom_feats.get(1.0, next(iter(self.zoom_feats.values())))


def model_scale(model, temperature: float | None) -> float:
    """Multiplier turning cosine similarities into softmax logits."""
    if temperature:
        return 1.0 / float(temperature)
    for name in ("logit_scale", "pool_scale", "scale"):
        v = getattr(model, name, None)
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            # open_clip/SigLIP keep log(scale) in a parameter
            val = float(v.detach().exp()) if name == "logit_scale" else float(v.detach())
            return float(min(max(val, 1.0), 100.0))
    return 20.0


def competitor_matrix(tags: list[str], mode: str, nests: set[tuple[str, str]]) -> torch.Tensor:
    """[K, K] bool: row k lists the tags that compete with tag k (never itself). With nesting
    (child, parent) pairs, the parent's row drops the child; the child's row keeps the parent.
    Dropping both ways spread the parts over the whole girl; the parent's way alone helped the
    whole and left the parts as they were (BENCHMARKS.md)."""
    if mode not in CAM_MODES:
        raise ValueError(f"unknown CAM mode {mode!r}; one of {', '.join(CAM_MODES)}")
    k = len(tags)
    comp = torch.zeros(k, k, dtype=torch.bool)
    if mode == "background":
        return comp
    for i, a in enumerate(tags):
        for j, b in enumerate(tags):
            if i == j:
                continue
            if mode == "nesting" and (b, a) in nests:
                continue
            comp[i, j] = True
    return comp


def competitive_softmax(sim: torch.Tensor, bg_sim: torch.Tensor, comp: torch.Tensor,
                        scale: float) -> torch.Tensor:
    """sim [B,K,h,w], bg_sim [B,nb,h,w] cosines -> [B,K,h,w] probability of each tag against
    its own competitor set plus background."""
    s = sim.float() * scale
    bg = torch.logsumexp(bg_sim.float() * scale, dim=1, keepdim=True)  # [B,1,h,w]
    # log-sum-exp over each tag's competitor set: mask others with -inf.
    b, k, h, w = s.shape
    others = s.unsqueeze(1).expand(b, k, k, h, w)  # [B, row k, col j, h, w]
    mask = comp.to(s.device).view(1, k, k, 1, 1)
    others = others.masked_fill(~mask, float("-inf"))
    denom = torch.logsumexp(torch.cat([others, s.unsqueeze(2), bg.unsqueeze(1).expand(b, k, 1, h, w)],
                                      dim=2), dim=2)
    return torch.exp(s - denom)


def _sims(model, x: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    feats = model.dense_features(x)
    sim = model.similarity(feats, text)
    bg = model.similarity(feats, F.normalize(model.background.float(), dim=-1))
    return feats, sim, bg


@torch.no_grad()
def text_cam(model, x: torch.Tensor, text: torch.Tensor, tags: list[str], cfg: CamConfig,
             nests: set[tuple[str, str]] | None = None, zoom: list[float] | None = None,
             part_area: list[tuple[int, float]] | None = None, zoom_max_area: float = 0.12) -> CamOutput:
    """Maps for one model input x [3,H,W] (`imaging.model_input`) and its tags' embeddings text [K,D].

    `zoom` (one factor per tag, default 1): tag k's maps come from the image enlarged by zoom[k]
    (times each of cfg.scales), so a small thing can be looked at closer than the stuff around it;
    every distinct factor costs its own passes, and the competition at each pass is among all tags.
    `part_area` (per tag: the index of its whole among `tags`, or -1, and its typical share of
    the whole's area): a zoomed part whose expected area in this image, its whole's base-scale
    area (`base_scale_area`) times that share, exceeds `zoom_max_area` keeps the base scale (a
    big girl's dress is not small: zoomed, only its hem was found)."""
    comp = competitor_matrix(tags, cfg.mode, nests or set())
    scale = model_scale(model, cfg.temperature)
    height, width = x.shape[-2:]
    zoom_t = torch.tensor(zoom if zoom is not None else [1.0] * len(tags), dtype=torch.float32)
    parts = [(k, j, r) for k, (j, r) in enumerate(part_area or []) if j >= 0 and zoom_t[k] != 1.0]
    zooms = set(zoom_t.tolist()) | ({1.0} if parts else set())
    grid = None
    per_zoom: dict[float, torch.Tensor] = {}
    zoom_feats: dict[float, torch.Tensor] = {}
    for z in sorted(zooms, reverse=True):  # the grid (and features) of the largest
        views = []
        for s in cfg.scales:
            xs = x.unsqueeze(0)
            if s * z != 1.0:
                zs = tuple(max(32, int(round(n * s * z / 32)) * 32) for n in (height, width))
                xs = F.interpolate(xs, size=zs, mode="bilinear", align_corners=False)
            batch = torch.cat([xs, xs.flip(-1)]) if cfg.flip else xs
            feats, sim, bg = _sims(model, batch, text)
            probs = competitive_softmax(sim, bg, comp, scale)
            if cfg.flip:
                probs = torch.stack([probs[0], probs[1].flip(-1)])
            if grid is None:
                h, w = feats.shape[-2:]
                grid = (h * cfg.grid_mult, w * cfg.grid_mult)
            if z not in zoom_feats:
                zoom_feats[z] = F.normalize(F.interpolate(feats[:1].float(), size=grid, mode="bilinear",
                                                          align_corners=False)[0], dim=0)
            views.append(F.interpolate(probs.float(), size=grid, mode="bilinear", align_corners=False))
        per_zoom[z] = torch.cat(views)
    if parts:
        area = base_scale_area(per_zoom[1.0].mean(0))
        for k, j, ratio in parts:
            if float(area[j]) * ratio > zoom_max_area:
                zoom_t[k] = 1.0
    views_t = next(iter(per_zoom.values())).clone()
    for z, v in per_zoom.items():
        views_t[:, zoom_t == z] = v[:, zoom_t == z]
    return CamOutput(probs=views_t.mean(0), views=views_t, zoom=zoom_t, zoom_feats=zoom_feats,
                     tags=list(tags))


def base_scale_area(probs: torch.Tensor, floor: float = 0.6) -> torch.Tensor:
    """[K] share of the grid where each map [K,h,w] reaches half its peak (the peak floored as in
    the pseudo-labeller's max-normalisation): a cheap stand-in for the tag's mask area."""
    peak = probs.flatten(1).amax(-1).clamp(min=floor)
    return (probs >= 0.5 * peak[:, None, None]).flatten(1).float().mean(-1)


@torch.no_grad()
def tag_probabilities(model, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Pooled per-tag probability [B, K] (the align model's own classifier) for images x."""
    feats = model.dense_features(x)
    logits = model.pool_logits(model.similarity(feats, text))
    return torch.sigmoid(logits.float())


def decide_nests(inside: dict[tuple[str, str], list[float]], min_inside: float = 0.5,
                 min_count: int = 3, things: set[str] = frozenset(), thing_inside: float = 0.25
                 ) -> set[tuple[str, str]]:
    """(child, parent) pairs whose child mask lies, on average over at least `min_count` images,
    at least `min_inside` inside the parent's mask (per-image shares from
    `calibration.calibrate_masks`). Parts lie well inside their wholes, but halos of things on
    stuff (a cloud in the sky) nest too, and co-occurring tags that are no part lie far outside
    (BENCHMARKS.md). A thing in a thing (both in `things`) needs only `thing_inside`: a part wins
    its own pixels from its whole in the competition, so its share can be low (a hat in 1girl)."""
    def bar(c: str, p: str) -> float:
        return thing_inside if c in things and p in things else min_inside

    return {(c, p) for (c, p), v in inside.items() if len(v) >= min_count and float(np.mean(v)) >= bar(c, p)}


def nest_candidates(tag_lists: list[list[str]], min_cooc: float = 0.9) -> set[tuple[str, str]]:
    """(child, parent) pairs worth the containment test: the child almost never appears without
    the parent, but the parent often appears without the child. Tags that imply each other
    (`ocean` and `beach` in SynthBooru) are a scene type, not a part and its whole: on one
    Stage A run the insertion test nested `ocean` in `beach` and `ocean` stopped competing
    with `beach` (both masks got worse), so mutual pairs are never candidates."""
    co = cooccurrence(tag_lists)
    return {(c, p) for (c, p), v in co.items() if v >= min_cooc and co.get((p, c), 0.0) < min_cooc}


def mutual_pairs(tag_lists: list[list[str]], min_cooc: float = 0.9) -> dict[tuple[str, str], float]:
    """(broad, specific) -> gap, for tags that imply each other (each co-occurs with the other
    >= min_cooc). The specific one is seen less often without the other: `beach` never without
    `ocean`, `ocean` 6 % of the time without `beach`; gap = P(broad | specific) - P(specific |
    broad) (0.06 there; 0 for synonyms, which are then in alphabetical order)."""
    co = cooccurrence(tag_lists)
    out = {}
    for (a, b), v in co.items():  # v = P(b | a)
        w = co.get((b, a), 0.0)  # P(a | b)
        if a < b and v >= min_cooc and w >= min_cooc:
            out[(b, a) if v > w else (a, b)] = abs(v - w)  # a is rarely without b: a is the specific one
    return out


def cooccurrence(tag_lists: list[list[str]], min_count: int = 3) -> dict[tuple[str, str], float]:
    """P(parent | child) for every ordered pair of tags seen together."""
    from collections import Counter
    from itertools import permutations

    single, pair = Counter(), Counter()
    for tags in tag_lists:
        uniq = sorted(set(tags))
        single.update(uniq)
        pair.update(permutations(uniq, 2))
    return {(c, p): n / single[c] for (c, p), n in pair.items() if single[c] >= min_count}
