"""Superpixel regions (SLIC / felzenszwalb from scikit-image) and region-level scoring.

A CAM is blurry and ignores edges; averaging it inside superpixels makes the mask follow the
image's own edges (SegCLIP-style superpixel consistency), and the threshold is chosen per map.
"""
from __future__ import annotations

import numpy as np


def superpixels(image: np.ndarray, method: str = "slic", n_segments: int | None = None,
                compactness: float = 10.0, coarse: float = 1.0) -> np.ndarray:
    """Integer labels [H, W] (0..R-1) of an RGB uint8 image; `coarse` multiplies felzenszwalb's
    scale (larger regions)."""
    from skimage.segmentation import felzenszwalb, slic

    h, w = image.shape[:2]
    if method == "slic":
        n = n_segments or max(16, (h * w) // 120)  # ~11x11 px regions: small enough for thin parts
        labels = slic(image, n_segments=n, compactness=compactness, start_label=0,
                      enforce_connectivity=True, channel_axis=-1, max_num_iter=5)
    elif method == "felzenszwalb":
        scale = max(20.0, (h * w) / 400.0) * coarse
        labels = felzenszwalb(image, scale=scale, sigma=0.5, min_size=max(8, (h * w) // 1500))
    else:
        raise ValueError(f"unknown superpixel method {method!r} (slic or felzenszwalb)")
    return _relabel(labels)


def _relabel(labels: np.ndarray) -> np.ndarray:
    _, inv = np.unique(labels, return_inverse=True)
    return inv.reshape(labels.shape).astype(np.int32)


def region_means(score: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean score and pixel count of every region."""
    flat = labels.ravel()
    n = int(flat.max()) + 1 if flat.size else 0
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    sums = np.bincount(flat, weights=score.ravel().astype(np.float64), minlength=n)
    return sums / np.maximum(counts, 1), counts


def region_score_map(score: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each pixel takes its region's mean score."""
    means, _ = region_means(score, labels)
    return means[labels].astype(np.float32)


def adaptive_threshold(score: np.ndarray, lo: float = 0.3, hi: float = 0.7,
                       base: float = 0.5, otsu_weight: float = 0.5) -> float:
    """Otsu's threshold on the map, blended with `base` and clipped to [lo, hi].

    Otsu adapts to maps whose foreground never reaches 0.5 (weak tags) or whose background
    stays high (stuff tags); the clip stops it from splitting a flat map at noise level."""
    from skimage.filters import threshold_otsu

    v = score.ravel()
    if v.size == 0 or float(v.max() - v.min()) < 1e-3:
        return float(base)
    t = otsu_weight * float(threshold_otsu(v)) + (1.0 - otsu_weight) * base
    return float(np.clip(t, lo, hi))


def regions_mask(score: np.ndarray, labels: np.ndarray | None, threshold: float | None = None,
                 lo: float = 0.3, hi: float = 0.7, otsu_weight: float = 0.5) -> tuple[np.ndarray, np.ndarray, float]:
    """(mask, smoothed score map, threshold) from a soft map and superpixel labels.

    With `labels=None` the pixel map itself is thresholded (the no-regions ablation)."""
    smooth = region_score_map(score, labels) if labels is not None else score.astype(np.float32)
    t = adaptive_threshold(smooth, lo, hi, otsu_weight=otsu_weight) if threshold is None else float(threshold)
    return smooth >= t, smooth, t


def components(mask: np.ndarray, max_parts: int = 4, min_frac: float = 0.02) -> list[np.ndarray]:
    """The largest connected parts of a mask (for region-level validation)."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n == 0:
        return []
    sizes = np.bincount(lab.ravel())[1:]
    order = np.argsort(-sizes)
    keep = [i + 1 for i in order[:max_parts] if sizes[i] >= min_frac * mask.sum()]
    return [lab == i for i in keep]


def appearance_split(image: np.ndarray, labels: np.ndarray, union: np.ndarray, score_a: np.ndarray,
                     score_b: np.ndarray, min_share: float = 0.05, min_delta_e: float = 12.0,
                     iters: int = 10) -> tuple[np.ndarray, np.ndarray] | None:
    """Split the pixels two tags share between them by looks: two colour clusters (weighted
    k-means on the regions' mean CIELAB colours, seeded at the regions each tag's map favours
    most over the other's), each cluster to the tag whose map prefers it more. None when the
    union does not hold two distinct looks (clusters < `min_share` of it, or centres closer than
    `min_delta_e`): then there is nothing to split on.

    Why: `ocean` and `beach` come together in 94 % of the scenes that carry either, so image-level
    tags cannot tell water from sand; Stage A maps `beach` as a band along the shoreline and
    `ocean` over both. Their union is right, and water and sand look different."""
    from skimage.color import rgb2lab

    ids = np.unique(labels[union])
    if ids.size < 2:
        return None
    flat = labels.ravel()
    n = int(flat.max()) + 1
    counts = np.bincount(flat, minlength=n).astype(np.float64)[ids]
    rgb = np.stack([np.bincount(flat, weights=image[..., c].ravel().astype(np.float64), minlength=n)[ids]
                    for c in range(3)], -1) / np.maximum(counts, 1)[:, None]
    lab = rgb2lab((rgb / 255.0)[None].astype(np.float64))[0]
    diff = region_means(score_a - score_b, labels)[0][ids]
    centres = lab[[int(np.argmax(diff)), int(np.argmin(diff))]].copy()
    for _ in range(iters):
        assign = np.argmin(((lab[:, None] - centres[None]) ** 2).sum(-1), 1)
        for c in range(2):
            if (assign == c).any():
                w = counts[assign == c]
                centres[c] = (lab[assign == c] * w[:, None]).sum(0) / w.sum()
    share = np.array([counts[assign == c].sum() for c in range(2)]) / counts.sum()
    if share.min() < min_share or float(np.linalg.norm(centres[0] - centres[1])) < min_delta_e:
        return None
    mean_a = region_means(score_a, labels)[0][ids]
    mean_b = region_means(score_b, labels)[0][ids]

    def cluster_mean(v: np.ndarray, c: int) -> float:
        w = counts * (assign == c)
        return float((v * w).sum() / max(w.sum(), 1e-9))

    # cluster 0 goes to a when a's map prefers it over cluster 1 more than b's map does
    a_takes_0 = (cluster_mean(mean_a, 0) - cluster_mean(mean_a, 1)) >= (cluster_mean(mean_b, 0) - cluster_mean(mean_b, 1))
    region_cluster = np.full(n, -1)
    region_cluster[ids] = assign
    pix = region_cluster[labels]
    to_a = 0 if a_takes_0 else 1
    return union & (pix == to_a), union & (pix == 1 - to_a)
