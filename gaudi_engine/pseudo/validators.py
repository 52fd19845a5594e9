"""Validators: does a candidate mask really hold the tag? Every score is kept, accepted or not.

- consistency: mean IoU between the masks of the augmented views (scales x flip);
- causal deletion: the align model's pooled probability of the tag must drop when the mask's
  pixels are greyed out; insertion: the masked pixels alone (the rest greyed) must keep it;
- region level (opt-in, `region_level`): each connected part of the mask must matter on its own
  (its deletion drops the score, or it alone keeps it); parts that do neither are cut from the
  mask. Off by default: one flower or cloud of several does neither, so it cut true instances
  (BENCHMARKS.md).

Verdict. Hard failures always reject (empty, whole image, the classifier does not see the tag).
Beyond those, policy "relative" (default) ranks: a mask is rejected when its quality (consistency
x causal evidence) falls in the bottom `reject_quantile` of its own tag's calibrated scores
(`calibrate_floors`). Small things score lower on every check than large stuff, so one absolute
threshold rejects nearly every `sun` or `tree` and the segmenter never learns them
(BENCHMARKS.md). Policy "absolute" keeps the fixed thresholds on each score.

Scores come from a `score_fn(images [N,3,S,S]) -> probs [N, K]` callback (the align model's
classifier over the image's K tags), so the logic here is model-agnostic and batched: one call
per image covers all its tags' deletions, insertions and parts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..imaging import Letterbox, letterbox_plane
from .regions import components

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ValidatorConfig:
    enabled: bool = True
    policy: str = "relative"  # or "absolute" (every check its own fixed threshold)
    reject_quantile: float = 0.1  # relative: reject the bottom share of each tag's quality
    calib_sample: int = 96  # relative: posts (first by post_id) that calibrate the floors
    min_consistency: float = 0.5
    min_deletion_drop: float = 0.15  # relative drop of the tag's probability
    min_insertion_keep: float = 0.4  # p(region alone) / p(image)
    min_area: float = 0.003
    max_area: float = 0.995
    min_prob: float = 0.05  # the classifier must see the tag at all
    region_level: bool = False
    max_parts: int = 4
    part_drop: float = 0.05
    part_keep: float = 0.5


def mean_pairwise_iou(masks: np.ndarray) -> float:
    """masks [V, h, w] bool -> mean IoU over view pairs (1.0 when all empty)."""
    v = masks.shape[0]
    if v < 2:
        return 1.0
    flat = masks.reshape(v, -1).astype(np.float32)
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1e-9), 1.0)
    iu = np.triu_indices(v, 1)
    return float(iou[iu].mean())


def _canvas_mask(mask: np.ndarray, box: Letterbox) -> torch.Tensor:
    """A working-size mask laid over the model's canvas where its picture lies."""
    return torch.from_numpy(letterbox_plane(mask, box))


def grey_out(x: torch.Tensor, remove: torch.Tensor) -> torch.Tensor:
    """x [3,S,S] normalised; pixels where `remove` go to 0 (the preprocessing mean colour),
    with a slightly blurred edge so the cut itself is not a new feature."""
    m = remove.float()[None, None]
    m = F.avg_pool2d(m, 5, stride=1, padding=2, count_include_pad=False)[0]
    return x * (1.0 - m)


def validate_image(x: torch.Tensor, masks: dict[str, np.ndarray], view_masks: dict[str, np.ndarray],
                   tags: list[str], score_fn: ScoreFn, cfg: ValidatorConfig,
                   box: Letterbox | None = None) -> dict[str, dict]:
    """Scores and verdict for each tag's candidate mask on one model input x [3,H,W] (the
    working image's canvas: `box` says where the picture lies; None: it fills the canvas).

    masks: tag -> bool mask at working size; view_masks: tag -> [V, h, w] per-view masks.
    Returns tag -> {"accepted", "reason", "mask" (possibly trimmed), scores...}."""
    h, w = x.shape[-2:]
    box = box or Letterbox(h, w, 0, 0, w, h)
    out: dict[str, dict] = {}
    variants = [x]
    plan: list[tuple[str, str, int, np.ndarray | None]] = []  # (tag, kind, variant idx, part)
    small = {}
    for tag in tags:
        m = masks[tag]
        ms = _canvas_mask(m, box)
        small[tag] = ms
        if not cfg.enabled or not m.any():
            continue
        variants.append(grey_out(x, ms))
        plan.append((tag, "del", len(variants) - 1, None))
        variants.append(grey_out(x, ~ms))
        plan.append((tag, "ins", len(variants) - 1, None))
        if cfg.region_level:
            parts = components(m, cfg.max_parts)
            if len(parts) > 1:
                for p in parts:
                    ps = _canvas_mask(p, box)
                    variants.append(grey_out(x, ps))
                    plan.append((tag, "pdel", len(variants) - 1, p))
                    variants.append(grey_out(x, ~ps))
                    plan.append((tag, "pins", len(variants) - 1, p))
    probs = score_fn(torch.stack(variants)).float().cpu().numpy()  # [N, K]
    base = probs[0]
    for k, tag in enumerate(tags):
        m = masks[tag]
        p0 = float(base[k])
        rec = {"prob": p0, "area": float(m.mean()), "consistency_iou": mean_pairwise_iou(view_masks[tag])
               if tag in view_masks else 1.0, "deletion_drop": float("nan"),
               "insertion_keep": float("nan"), "parts": 0, "parts_rejected": 0, "mask": m,
               "rejected_mask": np.zeros_like(m)}
        out[tag] = rec
    for tag, kind, vi, part in plan:
        k = tags.index(tag)
        p0 = max(float(base[k]), 1e-6)
        p = float(probs[vi, k])
        rec = out[tag]
        if kind == "del":
            rec["deletion_drop"] = (p0 - p) / p0
        elif kind == "ins":
            rec["insertion_keep"] = min(p / p0, 2.0)
        elif kind == "pdel":
            rec.setdefault("_parts", []).append([part, (p0 - p) / p0, 0.0])
        else:
            rec["_parts"][-1][2] = min(p / p0, 2.0)
    for tag in tags:
        rec = out[tag]
        parts = rec.pop("_parts", [])
        rec["parts"] = len(parts)
        if parts:
            keep = np.zeros_like(rec["mask"])
            for part, drop, ins in parts:
                if drop >= cfg.part_drop or ins >= cfg.part_keep:
                    keep |= part
                else:
                    rec["parts_rejected"] += 1
                    rec["rejected_mask"] |= part
            if not keep.any():  # every part failed on its own: keep the one that matters most
                best = max(parts, key=lambda p: p[1] + p[2])
                keep = best[0].copy()
                rec["parts_rejected"] -= 1
                rec["rejected_mask"] &= ~keep
            # small unlisted specks stay with the kept parts
            rest = rec["mask"] & ~np.logical_or.reduce([p for p, _, _ in parts])
            rec["mask"] = keep | rest
        rec["accepted"], rec["reason"] = _verdict(rec, cfg)
    return out


def _verdict(rec: dict, cfg: ValidatorConfig) -> tuple[bool, str]:
    reasons = []
    area = float(rec["mask"].mean())
    if area < cfg.min_area:
        reasons.append("empty")
    elif area > cfg.max_area:
        reasons.append("whole-image")
    if cfg.enabled and rec["prob"] < cfg.min_prob:
        reasons.append("tag-not-seen")
    if cfg.enabled and cfg.policy == "absolute":
        if rec["consistency_iou"] < cfg.min_consistency:
            reasons.append("unstable")
        if not (rec["deletion_drop"] >= cfg.min_deletion_drop):  # nan fails too
            reasons.append("deletion-no-drop")
        if not (rec["insertion_keep"] >= cfg.min_insertion_keep):
            reasons.append("insertion-lost")
    return (not reasons), ",".join(reasons) or "ok"


def quality_score(rec: dict, confidence: bool = False) -> float:
    """One number ranking masks by how much the validators trust them (for the browser, the
    relative floors and the Spearman check): consistency x causal evidence (the align model's
    deletion / insertion tests), or with `confidence` (round 2, masks read off a segmenter)
    consistency x the segmenter's mean probability inside the mask. The align model's tests rank
    a segmenter's masks poorly (BENCHMARKS.md)."""
    if confidence:
        return float(rec.get("consistency_iou", 0.0) * max(rec.get("cam_score", 0.0), 0.0))
    drop = rec.get("deletion_drop", float("nan"))
    ins = rec.get("insertion_keep", float("nan"))
    drop = 0.0 if drop != drop else min(max(drop, 0.0), 1.0)
    ins = 0.0 if ins != ins else min(max(ins, 0.0), 1.0)
    return float(rec.get("consistency_iou", 0.0) * (0.5 * drop + 0.5 * ins))


def calibrate_floors(qualities: dict[str, list[float]], quantile: float, min_count: int = 5) -> dict:
    """Per-tag quality floors: each tag's `quantile` over calibration masks that passed the hard
    checks; a tag with fewer than `min_count` of them gets the floor over all tags."""
    floors = {t: float(np.quantile(v, quantile)) for t, v in qualities.items() if len(v) >= min_count}
    # a tag too rare to calibrate is most likely a small thing: the most lenient known floor
    default = min(floors.values()) if floors else 0.0
    return {"quantile": float(quantile), "default": float(default), "floors": floors}


def apply_floor(rec: dict, floor: float) -> None:
    """Relative policy: a mask that passed the hard checks but ranks below its tag's floor."""
    if rec["accepted"] and rec["quality"] < floor:
        rec["accepted"], rec["reason"] = False, "low-quality"
