"""Superpixel regions (SLIC / felzenszwalb from scikit-image) and region-level scoring.

A CAM is blurry and ignores edges; averaging it inside superpixels makes the mask follow the
image's own edges (SegCLIP-style superpixel consistency), and the threshold is chosen per map.
"""
from __future__ import annotations

from typing import NamedTuple

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



class ColourClusters(NamedTuple):
    centres: np.ndarray  # [2, 3] CIELAB means of the two clusters
    pixels: tuple[np.ndarray, np.ndarray]  # each cluster's pixels (inside the union)
    margin: float  # how much more a's map prefers cluster 0 over 1 than b's map does


def colour_clusters(image: np.ndarray, labels: np.ndarray, union: np.ndarray, score_a: np.ndarray,
                    score_b: np.ndarray, min_share: float = 0.05, min_delta_e: float = 12.0,
                    iters: int = 10) -> ColourClusters | None:
    """The two looks of the pixels two tags share: weighted k-means on the regions' mean CIELAB
    colours, seeded at the regions each tag's map favours most over the other's. None when the
    union does not hold two distinct looks (a cluster < `min_share` of it, or centres closer than
    `min_delta_e`): then there is nothing to split on."""
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

    def pref(score: np.ndarray) -> float:  # the map's mean on cluster 0 minus on cluster 1
        means = region_means(score, labels)[0][ids]
        m = [float((means * counts * (assign == c)).sum() / (counts * (assign == c)).sum()) for c in range(2)]
        return m[0] - m[1]

    region_cluster = np.full(n, -1)
    region_cluster[ids] = assign
    pix = region_cluster[labels]
    return ColourClusters(centres, (union & (pix == 0), union & (pix == 1)), pref(score_a) - pref(score_b))


Look = dict  # {"mean": [L, a, b], "var": [...]}: a Gaussian over a tag's cluster colours


def look_ll(look: Look, c: np.ndarray):
    """Log-likelihood (up to a constant) of CIELAB colour(s) [..., 3] under a look's diagonal
    Gaussian: a float for one colour, an array for many."""
    mean, var = np.asarray(look["mean"]), np.asarray(look["var"])
    return -0.5 * (((c - mean) ** 2) / var + np.log(var)).sum(-1)


def solo_look(colours: list[np.ndarray], min_var: float = 100.0) -> Look | None:
    """A tag's look from its mean CIELAB colours in the images where it appears without the tag
    it usually comes with (`ocean` without `beach`): there nothing else shares its map."""
    if len(colours) < 2:
        return None
    v = np.stack(colours)
    return {"mean": v.mean(0).tolist(), "var": np.maximum(v.var(0), min_var).tolist()}


def mean_lab(image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """Mean CIELAB colour of a mask's pixels (None for an empty mask)."""
    from skimage.color import rgb2lab

    if not mask.any():
        return None
    rgb = image[mask].astype(np.float64).mean(0) / 255.0
    return rgb2lab(rgb[None, None])[0, 0]


def look_llr(look_a: Look, look_b: Look, centres: np.ndarray) -> float:
    """Log-likelihood that cluster 0 looks like a and cluster 1 like b, minus the swap."""
    return float(look_ll(look_a, centres[0]) + look_ll(look_b, centres[1]) - look_ll(look_a, centres[1])
                 - look_ll(look_b, centres[0]))


def fit_looks(samples: list[tuple[np.ndarray, float]], iters: int = 10, min_var: float = 25.0,
              anchor: Look | None = None) -> tuple[Look, Look] | None:
    """Each tag's look from many images' cluster pairs (centres [2,3], map margin): start from
    what the maps say (margin > 0: cluster 0 is a's), fit a Gaussian per tag, reassign every image
    by the looks, repeat. The looks then overrule the maps where they are wrong (a thin night sea
    whose `ocean` map sits on the sand). With `anchor` (a's `solo_look`) the start is the cluster
    that looks more like a alone instead: on one Stage A run the maps were wrong in most images,
    and the looks came out swapped (BENCHMARKS.md)."""
    if len(samples) < 4:
        return None
    cs = np.stack([c for c, _ in samples])  # [N, 2, 3]
    if anchor is not None:
        a_takes_0 = np.array([look_ll(anchor, c[0]) > look_ll(anchor, c[1]) for c in cs])
    else:
        a_takes_0 = np.array([m > 0 for _, m in samples])
    looks = None
    for _ in range(iters):
        a = np.where(a_takes_0[:, None], cs[:, 0], cs[:, 1])
        b = np.where(a_takes_0[:, None], cs[:, 1], cs[:, 0])
        looks = tuple({"mean": v.mean(0).tolist(), "var": np.maximum(v.var(0), min_var).tolist()} for v in (a, b))
        new = np.array([look_llr(looks[0], looks[1], c) > 0 for c in cs])
        if (new == a_takes_0).all():
            break
        a_takes_0 = new
    return looks


def appearance_split(image: np.ndarray, labels: np.ndarray, union: np.ndarray, score_a: np.ndarray,
                     score_b: np.ndarray, looks: tuple[Look, Look] | None = None
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """Split the pixels two tags share between them by looks: the union's two colour clusters
    (`colour_clusters`), each to the tag whose look (`fit_looks`, when known) it matches, else to
    the tag whose map prefers it more. None when the union has one look only.

    Why: `ocean` and `beach` come together in 94 % of the scenes that carry either, so image-level
    tags cannot tell water from sand; Stage A maps `beach` as a band along the shoreline and
    `ocean` over both. Their union is right, and water and sand look different."""
    cl = colour_clusters(image, labels, union, score_a, score_b)
    if cl is None:
        return None
    a_takes_0 = look_llr(looks[0], looks[1], cl.centres) > 0 if looks else cl.margin >= 0
    return cl.pixels if a_takes_0 else cl.pixels[::-1]


def reassign_by_colour(image: np.ndarray, labels: np.ndarray, masks: dict[str, np.ndarray],
                       maps: dict[str, np.ndarray], tags: list[str], related: set[tuple[str, str]] = frozenset(),
                       floor: float = 0.1, min_var: float = 25.0) -> dict[str, np.ndarray]:
    """One GrabCut-style step for stuff that borders stuff (sky over the sea, the sea over sand):
    each tag's colour (a CIELAB Gaussian over its mask's regions, in this image), then each region
    that two or more of `tags` claim (their map >= `floor` there, their mask over it or not) goes to
    the tag whose colour fits it best. A CAM's maps blur across the horizon; the colours there
    don't. Tags in `related` (nested either way: starry_sky in sky) never take a region from each
    other. Returns new masks for `tags` (the others are untouched)."""
    from skimage.color import rgb2lab

    out = dict(masks)
    tags = [t for t in tags if t in masks and masks[t].any()]
    if len(tags) < 2:
        return out
    lab = rgb2lab(image.astype(np.float64) / 255.0)
    colour = np.stack([region_means(lab[..., c], labels)[0] for c in range(3)], 1)  # [R, 3]
    ll, claims = [], []
    for t in tags:
        share, counts = region_means(masks[t], labels)
        w = share * counts  # the mask's pixels in each region
        mean = (colour * w[:, None]).sum(0) / w.sum()
        var = ((colour - mean) ** 2 * w[:, None]).sum(0) / w.sum() + min_var
        ll.append(look_ll({"mean": mean, "var": var}, colour))
        claims.append(region_means(maps[t], labels)[0] >= floor)
    ll_t, claims_t = np.stack(ll), np.stack(claims)  # [T, R]
    contested = claims_t.sum(0) >= 2
    best = np.argmax(np.where(claims_t, ll_t, -np.inf), 0)
    for i, t in enumerate(tags):
        kin = np.array([j == i or (t, u) in related or (u, t) in related for j, u in enumerate(tags)])
        wins = contested & claims_t[i] & (best == i)
        loses = contested & claims_t[i] & ~kin[best]  # a kin's best fit leaves t's mask as it was
        out[t] = (masks[t] | wins[labels]) & ~loses[labels]
    return out

