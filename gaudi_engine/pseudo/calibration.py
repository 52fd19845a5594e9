"""Run-level measurements on the first posts of the whole manifest (by post_id, so every shard
measures the same ones): mask areas and spans, how far candidate parts lie inside their wholes,
the looks of tags that imply each other (`calibrate_masks`), and the validators' per-tag floors
(`calibrate`). The run driver (`run`) turns them into the run's structure."""
from __future__ import annotations

import numpy as np

from ..imaging import ImageError
from ..progress import Progress
from .config import PseudoConfig
from .labeler import PseudoLabeler
from .regions import colour_clusters, fit_looks, mean_lab, solo_look
from .validators import calibrate_floors


def calibration_posts(labeler: PseudoLabeler, records: list[dict], cfg: PseudoConfig, what: str = "calibrate"):
    """(record, working image, tags) of the first `calib_sample` posts of the whole manifest (by
    post_id, so every shard calibrates on the same ones) that load and carry tags, with a bar."""
    sample = sorted(records, key=lambda r: r["post_id"])[: cfg.validators.calib_sample]
    with Progress(what, total=len(sample), unit="post", prelude=True) as bar:
        for rec in sample:
            tags = [t for t in dict.fromkeys(rec["tags"]) if t]
            try:
                image = labeler.load(rec)
            except ImageError:
                bar.update(1)
                continue
            if tags:
                yield rec, image, tags
            bar.update(1)  # counted once the caller is done with it


def calibrate_masks(labeler: PseudoLabeler, records: list[dict], cfg: PseudoConfig,
                    candidates: set[tuple[str, str]] = frozenset()) -> dict:
    """One pass over the first `calib_sample` posts of the whole manifest at the base scale, every
    tag competing with every other, for the run-level decisions (the measurements of the run's
    `structure.json`):

    - which tags are mapped on the enlarged image (SNIP-style: each object size has the scale that
      suits it). A 128 px CAM blurs a small thing into a halo over its surroundings (a tree takes
      the grass stripes around it), while stuff enlarged loses its context (`sky` moves onto the
      ocean; BENCHMARKS.md). So a tag takes `fine_zoom` when its median mask covers less than
      `fine_area`;
    - each tag's typical (median) area, for a part's zoom in a big whole, and the typical share
      of the image's columns its mask reaches: stuff spans the image (`PseudoConfig.stuff_span`);
    - for each co-occurrence nesting candidate (child, parent), the share of the child's mask that
      lies inside the parent's (`decide_nests`): a part lies well inside its whole even while the
      two compete, a mere co-occurring tag does not (BENCHMARKS.md). (An insertion test, the
      child's pixels alone on grey, found none of the parts of `1girl`: the pooled classifier
      reads context.)
    - for each pair of tags that imply each other, with `mutual="appearance"`, each one's look
      (`fit_looks` over the colour clusters of their shared pixels)."""
    zoom_on = bool(cfg.fine_zoom) and cfg.fine_zoom != 1.0
    pairs = list(labeler.mutual) if cfg.mutual == "appearance" else []
    if not zoom_on and not candidates and not pairs:  # nothing needs the pass
        return {"zoomed_tags": {}, "median_area": {}, "containment_shares": []}
    saved = labeler.zoom, labeler.nests
    labeler.zoom, labeler.nests = {}, set()
    areas: dict[str, list[float]] = {}
    spans: dict[str, list[float]] = {}  # share of the image's columns each mask reaches
    inside: dict[tuple[str, str], list[float]] = {}
    clusters: dict[tuple[str, str], list] = {}
    for _, image, tags in calibration_posts(labeler, records, cfg, "calibrate-masks"):
        sm = labeler.score_maps(image, tags)
        labels = labeler.superpixels(image)
        found = dict(zip(tags, labeler.region_masks(image, sm.maps, labels)))
        masks = {t: m for t, (m, _, _) in found.items()}
        for tag, m in masks.items():
            areas.setdefault(tag, []).append(float(m.mean()))
            spans.setdefault(tag, []).append(float(m.any(0).mean()))
        for c, p in candidates:
            if c in masks and p in masks and masks[c].any():
                inside.setdefault((c, p), []).append(round(float((masks[c] & masks[p]).sum() / masks[c].sum()), 4))
        for a, b in pairs:
            if a in masks and b in masks and labels is not None:
                raw = [found[t][1] * sm.peaks[tags.index(t)] for t in (a, b)]
                cl = colour_clusters(image.pixels, labels, masks[a] | masks[b], *raw)
                if cl is not None:
                    clusters.setdefault((a, b), []).append((cl.centres, cl.margin))
    anchors = {(a, b): solo_look(solo_colours(labeler, records, a, b, cfg.solo_sample)) for a, b in pairs}
    labeler.zoom, labeler.nests = saved
    looks = []
    for (a, b), samples in sorted(clusters.items()):
        # without posts showing the broad tag alone nothing says which look is whose: the maps
        # alone got it backwards on some Stage A runs (BENCHMARKS.md)
        anchor = anchors.get((a, b))
        fitted = fit_looks(samples, anchor=anchor) if anchor else None
        if fitted is not None:
            looks.append({"pair": [a, b], "looks": list(fitted), "images": len(samples), "anchor": anchor})
    median = {t: float(np.median(a)) for t, a in sorted(areas.items())}
    # a tag seen fewer than 3 times keeps the base scale
    zoom = {t: float(cfg.fine_zoom) for t, a in median.items()
            if zoom_on and len(areas[t]) >= 3 and a < cfg.fine_area}
    span = {t: float(np.median(v)) for t, v in sorted(spans.items())}
    return {"zoomed_tags": zoom, "median_area": median, "median_span": span,
            "containment_shares": [{"child": c, "parent": p, "shares": v} for (c, p), v in sorted(inside.items())],
            "looks": looks}


def solo_colours(labeler: PseudoLabeler, records: list[dict], broad: str, specific: str,
                 limit: int = 32) -> list[np.ndarray]:
    """Mean CIELAB colour of `broad`'s mask in the (first `limit`, by post_id) posts of the whole
    manifest that carry it without `specific`: the only images that show what `broad` alone
    looks like (`ocean` without `beach`: a few in a hundred scenes). A pass with its own bar."""
    out = []
    solo = [r for r in sorted(records, key=lambda r: r["post_id"])
            if broad in r["tags"] and specific not in r["tags"]][:limit]
    with Progress(f"calibrate-looks {broad}/{specific}", total=len(solo), unit="post", prelude=True) as bar:
        for rec in solo:
            try:
                image = labeler.load(rec)
            except ImageError:
                bar.update(1)
                continue
            tags = [t for t in dict.fromkeys(rec["tags"]) if t]
            sm = labeler.score_maps(image, tags)
            mask, _, _ = labeler.region_masks(image, sm.maps[[tags.index(broad)]], labeler.superpixels(image))[0]
            colour = mean_lab(image.pixels, mask)
            if colour is not None:
                out.append(colour)
            bar.update(1)
    return out


def calibrate(labeler: PseudoLabeler, records: list[dict], cfg: PseudoConfig,
              keep: set[int] = frozenset()) -> tuple[dict, dict[int, dict]]:
    """Per-tag quality floors from the first `calib_sample` posts of the whole manifest (so every
    shard uses the same ones): the relative validator policy's bottom-quantile cut. Also returns
    the labels (before the floors) of the sampled posts in `keep`, so the main pass reuses them."""
    labeler.floors = None
    qualities: dict[str, list[float]] = {}
    kept: dict[int, dict] = {}
    for rec, image, tags in calibration_posts(labeler, records, cfg, "calibrate-floors"):
        recs = labeler.label_image(image, tags)
        if rec["post_id"] in keep:
            kept[rec["post_id"]] = recs
        for tag, r in recs.items():
            if r["accepted"]:  # passed the hard checks
                qualities.setdefault(tag, []).append(float(r["quality"]))
    return calibrate_floors(qualities, cfg.validators.reject_quantile), kept
