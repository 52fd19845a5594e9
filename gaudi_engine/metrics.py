"""Segmentation quality: dataset-level IoU per tag (sum of intersections / sum of unions over
the images that carry the tag), mIoU = mean over tags. Per-mask IoU for validator studies."""
from __future__ import annotations

from collections import defaultdict

import numpy as np


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty (nothing to find, nothing found)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    union = np.logical_or(pred, gt).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, gt).sum() / union)


class IoUAccumulator:
    """Accumulates I and U per tag over a dataset."""

    def __init__(self) -> None:
        self.inter: dict[str, int] = defaultdict(int)
        self.union: dict[str, int] = defaultdict(int)
        self.count: dict[str, int] = defaultdict(int)

    def add(self, tag: str, pred: np.ndarray, gt: np.ndarray) -> None:
        pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
        if pred.shape != gt.shape:
            raise ValueError(f"mask shapes differ for {tag}: {pred.shape} vs {gt.shape}")
        self.inter[tag] += int(np.logical_and(pred, gt).sum())
        self.union[tag] += int(np.logical_or(pred, gt).sum())
        self.count[tag] += 1

    def per_tag(self) -> dict[str, float]:
        return {t: (self.inter[t] / self.union[t] if self.union[t] else 1.0)
                for t in sorted(self.count)}

    def miou(self) -> float:
        per = self.per_tag()
        return float(np.mean(list(per.values()))) if per else 0.0

    def summary(self) -> dict:
        return {"miou": self.miou(), "per_tag": self.per_tag(), "n_masks": int(sum(self.count.values()))}


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan when undefined."""
    from scipy.stats import spearmanr

    if len(a) < 3:
        return float("nan")
    r = spearmanr(a, b).statistic
    return float(r)
