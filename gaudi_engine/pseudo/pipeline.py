"""`gaudi pseudolabels`: text-CAM -> affinity -> regions -> validators, for every post's tags.
Round 2 (`segmenter_ckpt`, self-training as in MaskCLIP+): the round-1 segmenter's probabilities
replace the CAM -> affinity part; regions (at `infer`'s scale) and validators are the same, and
round 1's `zoom.json` / `nesting.json` are copied from the run the segmenter was trained on.

Every pixel step runs on the post's working image (`imaging`: decoded once, aspect kept, short side
`Preprocess.working_side`, cached beside the manifest); the masks and soft maps are upsampled to
the image's own size only when written.

Output (DESIGN §6), in `out/`:
  masks/<post_id>/<tag>.png      accepted masks (0/255, image size)
  rejected/<post_id>/<tag>.png   rejected masks, and rejected parts of accepted ones
  scores/<post_id>/<tag>.png     soft score map (8-bit)
  parts/shard-I-of-N.jsonl       one line per finished post (its index rows): resumability
  index.parquet                  all rows of all parts, sorted by (post_id, tag)
  nesting.json, config.json      the containment pairs used and the run's settings
  zoom.json                      tags mapped on the enlarged image (small things), their median areas,
                                 how far each candidate part lies inside its whole, the looks
                                 (colour models) of tags that imply each other
  calibration.json               per-tag quality floors (relative validator policy)

Shards split the posts (sorted by post_id) into contiguous chunks; the nesting statistics come
from the whole manifest, so the shards' rows merge to exactly the unsharded index. A rerun skips
every post already in any part.
"""
from __future__ import annotations

import json
import logging
import os
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import GaudiError
from ..imaging import ImageError, Preprocess, WorkingImage, WorkingImageCache, cache_for, load_working, \
    maps_to_working, model_input, upsample_mask, upsample_maps
from ..progress import Progress
from . import affinity as aff
from .cam import CamConfig, decide_nests, mutual_pairs, nest_candidates, tag_probabilities, \
    text_cam
from .regions import appearance_split, colour_clusters, fit_looks, mean_lab, reassign_by_colour, regions_mask, \
    solo_look, superpixels
from .validators import ValidatorConfig, apply_floor, calibrate_floors, quality_score, validate_image
from ..fileio import atomic_write_text

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["post_id", "tag", "accepted", "reason", "area", "cam_score", "consistency_iou",
                 "deletion_drop", "insertion_keep", "prob", "quality", "threshold", "margin",
                 "parts", "parts_rejected", "width", "height", "mask_path", "score_path", "round"]


@dataclass
class PseudoConfig:
    cam: CamConfig = field(default_factory=CamConfig)
    validators: ValidatorConfig = field(default_factory=ValidatorConfig)
    affinity: bool = True
    aff_radius: int = 2
    aff_beta: float = 10.0
    aff_iters: int = 3
    regions: str | None = "felzenszwalb"  # or slic | None (pixel threshold); see BENCHMARKS ablations
    region_coarse: float = 2.0  # felzenszwalb regions twice `infer`'s scale: a CAM is blurrier than a
    # segmenter (150 posts: 0.588 -> 0.599; x4 merged the flowers into the grass, 0.48 -> 0.13)
    seg_region_coarse: float = 1.0  # round 2 reads a segmenter, as sharp as what `infer` reads: its
    # regions (150 posts of round 2: 0.734 -> 0.745 all masks; tree 0.76 -> 0.81, sun 0.81 -> 0.86)
    fixed_threshold: float | None = None  # None: adaptive per map
    threshold_range: tuple[float, float] = (0.3, 0.7)  # the adaptive threshold's clip
    otsu_weight: float = 0.5  # adaptive threshold = w * Otsu + (1 - w) * 0.5
    mutual: str | None = "appearance"  # tags that imply each other (`resolve_mutual`): "appearance"
    # splits their union by colour, its looks oriented by the broad tag seen alone (150 posts, three
    # Stage A runs: ocean 0.26-0.39 -> 0.71-0.85, beach -> 0.91-0.98) | None (left alone)
    solo_sample: int = 32  # posts showing the broad one of two such tags alone, to orient their looks
    mutual_min_gap: float = 0.02  # a split needs one tag seen alone this much more often (not synonyms)
    max_norm: float | None = 0.6  # divide each present tag's map by max(its maximum, this)
    seg_threshold: float = 0.5  # round 2 with the segmenter alone: its masks are probability >= this
    fine_zoom: float | None = 2.0  # tags whose typical mask is small are mapped on the image x this
    fine_area: float = 0.12  # ... "small": median base-scale mask area below this share of the image
    part_inside: float | None = 0.7  # ... unless it is a part (lies this much inside its whole) of a
    # whole big enough in this image that the part is not small (a big girl's dress; None: never)
    nest_inside: float = 0.5  # a candidate part nests when its mask lies this much inside its whole's
    thing_nest_inside: float = 0.25  # ... this much, for a thing in a thing (hat in 1girl: 0.33-0.47)
    inherit_structure: bool = True  # round 2 reuses round 1's zoom.json and nesting.json
    cut_occluders: bool = True  # a thing nested in stuff (a cloud in the sky, a tree on the grass)
    # stands in front of it: its mask is cut out of the stuff's, as COCO's panoptic masks do; parts of
    # a thing (a dress, a hat: what a character wears) and kinds of stuff (starry_sky) join their whole
    stuff_colours: bool = True  # stuff that borders stuff: each contested region to the colour that fits
    # it best in this image (`reassign_by_colour`; 200 posts of v1: ocean 0.79 -> 0.86, sky 0.88 -> 0.92)
    stuff_colour_floor: float = 0.1  # ... "contested": two stuff tags' maps reach this over the region
    stuff_span: float = 0.9  # "stuff": a tag whose round-1 mask typically reaches this share of the
    # image's columns (SynthBooru: sky, sea, beach, grass, backgrounds 1.0; things <= 0.56; by area,
    # a thin beach band (0.19) passed for a thing on one Stage A run and nested its umbrella)

    def to_dict(self) -> dict:
        return asdict(self)


def segmenter_maps(segmenter, x: torch.Tensor, text: torch.Tensor, box, shape: tuple[int, int]) -> torch.Tensor:
    """[K, h, w] a segmenter's probabilities for one model input x [3,H,W], cropped to the picture
    (`box`) and resized to its working `shape` (round 2 and `infer` read them alike)."""
    canvas = segmenter.probabilities(x.unsqueeze(0), text, tuple(x.shape[-2:]))[0]
    return maps_to_working(canvas, box, shape)


def tag_filename(tag: str) -> str:
    """Tags become file names; anything unsafe for a file name is %-quoted (`/` `:` ...)."""
    return urllib.parse.quote(tag, safe="!#$&'()+,;=@[]^_`{}~- ") + ".png"


def parse_shard(spec: str | None) -> tuple[int, int]:
    if not spec:
        return 0, 1
    try:
        i, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise GaudiError(f"--shard must look like I/N (e.g. 0/4), got {spec!r}") from None
    if n < 1 or not 0 <= i < n:
        raise GaudiError(f"--shard {spec}: need 0 <= I < N")
    return i, n


def shard_records(records: list[dict], shard: tuple[int, int]) -> list[dict]:
    i, n = shard
    recs = sorted(records, key=lambda r: r["post_id"])
    lo, hi = (len(recs) * i) // n, (len(recs) * (i + 1)) // n
    return recs[lo:hi]


class TagTexts:
    """Text embeddings per tag: the checkpoint's stored ones for its vocabulary, otherwise from
    the model's text tower (a tag with no description uses its own name, with a warning)."""

    def __init__(self, model, vocab: list[str], text_emb: torch.Tensor | None, descriptions: dict):
        self.model = model
        self.descriptions = dict(descriptions or {})
        self.cache: dict[str, torch.Tensor] = {}
        if text_emb is not None:
            for t, e in zip(vocab, text_emb):
                self.cache[t] = F.normalize(e.float(), dim=-1)
        self.warned: set[str] = set()

    @torch.no_grad()
    def get(self, tags: list[str]) -> torch.Tensor:
        missing = [t for t in tags if t not in self.cache]
        if missing:
            descs = {}
            for t in missing:
                d = self.descriptions.get(t)
                if not d:
                    if t not in self.warned:
                        log.warning("tag %r has no description; using its name as text", t)
                        self.warned.add(t)
                    d = [t.replace("_", " ")]
                descs[t] = d
            emb = self.model.tag_embeddings(descs, missing)
            for t, e in zip(missing, emb):
                self.cache[t] = F.normalize(e.detach().float().cpu(), dim=-1)
        dev = next(self.model.parameters()).device
        return torch.stack([self.cache[t] for t in tags]).to(dev)


class ScoreMaps(NamedTuple):
    x: torch.Tensor  # the model input [3,S,S] (the working image letterboxed)
    maps: np.ndarray  # [K,h,w] soft maps at working size (the CAM's max-normalised per tag)
    views: np.ndarray  # [V,K,gh,gw] per-view maps over the picture (the consistency validator)
    peaks: np.ndarray  # [K] what each CAM map was divided by (ones for the segmenter's)
    box: "object" = None  # imaging.Letterbox: where the picture lies in x


class PseudoLabeler:
    """Per-image pseudo-labelling with one align model (and optionally a round-1 segmenter)."""

    def __init__(self, model, preprocess: dict | Preprocess, texts: TagTexts, cfg: PseudoConfig,
                 nests: set[tuple[str, str]] | None = None, segmenter=None, device: str = "cpu"):
        self.model, self.texts, self.cfg = model, texts, cfg
        self.preprocess = Preprocess.from_dict(preprocess)
        self.nests = nests or set()
        self.segmenter = segmenter
        self.device = device
        self.floors: dict | None = None  # relative validator policy: from `calibrate`
        self.zoom: dict[str, float] = {}  # tag -> CAM zoom (from `calibrate_masks`; default 1)
        self.mutual: dict[tuple[str, str], float] = {}  # tags that imply each other (`mutual_pairs`)
        self.median_area: dict[str, float] = {}  # tag -> typical mask area (from `calibrate_masks`)
        self.stuff: set[str] = set()  # tags whose masks typically span the image (`PseudoConfig.stuff_span`)
        self.parts: dict[str, str] = {}  # part -> whole: nests that lie >= cfg.part_inside inside
        self.occluders: set[tuple[str, str]] = set()  # (thing, stuff): nests that are no part
        self.looks: dict[tuple[str, str], tuple] = {}  # mutual pair -> each tag's look (`fit_looks`)
        self.cache: WorkingImageCache | None = None  # decoded working images (`imaging`)

    def load(self, rec: dict) -> WorkingImage:
        """A manifest row's working image (ImageError when it cannot be read)."""
        return load_working(rec["image_path"], self.preprocess, self.cache, rec.get("md5") or None)

    @torch.no_grad()
    def score_maps(self, image: WorkingImage, tags: list[str]) -> "ScoreMaps":
        """Soft maps [K,h,w] (numpy, working size), per-view maps, and the divisors that undo the
        CAM's max-normalisation (to compare tags on one scale)."""
        x, box = model_input(image, self.preprocess)
        x = x.to(self.device)
        text = self.texts.get(tags)
        h, w = image.shape
        peaks = torch.ones(len(tags))
        if self.segmenter is not None:  # round 2: the round-1 segmenter's own probabilities; no CAM
            # pass (fusing them with the CAM made worse masks than the segmenter alone, BENCHMARKS.md).
            # The consistency validator checks the segmenter on the plain and the flipped image
            full = segmenter_maps(self.segmenter, x, text, box, (h, w))
            grid = (max(x.shape[-2] // 4, 1), max(x.shape[-1] // 4, 1))
            both = self.segmenter.probabilities(torch.stack([x, x.flip(-1)]), text, grid)
            views = box.crop(torch.stack([both[0], both[1].flip(-1)]))
            return ScoreMaps(x, full.cpu().numpy(), views.cpu().numpy(), peaks.cpu().numpy(), box)
        # round 1: the CAM's own map, refined, max-normalised, at working size
        cam = text_cam(self.model, x, text, tags, self.cfg.cam, self.nests,
                       zoom=[self.zoom.get(t, 1.0) for t in tags], part_area=self.part_area(tags),
                       zoom_max_area=self.cfg.fine_area)
        probs, views = cam.probs.unsqueeze(0), cam.views
        if self.cfg.affinity:  # each tag propagates along the features of the zoom it was seen at
            refined = probs.clone()
            for z, feats in cam.zoom_feats.items():
                sel = cam.zoom == z
                if sel.any():
                    refined[:, sel] = aff.refine(probs[:, sel], feats.unsqueeze(0), self.cfg.aff_radius,
                                                 self.cfg.aff_beta, self.cfg.aff_iters)
            probs = refined
        probs, views = box.crop(probs), box.crop(views)  # the picture's part of the canvas
        if self.cfg.max_norm is not None:  # the tag IS in the image: its best pixels are its
            # pixels (CAM max-normalisation, down to a floor), else a tag that never wins the
            # softmax outright gets no mask
            floor = max(float(self.cfg.max_norm), 1e-6)
            peaks = probs[0].flatten(1).amax(-1).clamp(min=floor)
            probs = probs / peaks[None, :, None, None]
            views = views / views.flatten(2).amax(-1)[..., None, None].clamp(min=floor)
        full = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1)
        return ScoreMaps(x, full.cpu().numpy(), views.cpu().numpy(), peaks.cpu().numpy(), box)

    @property
    def reads_segmenter_only(self) -> bool:
        """Round 2: the segmenter alone, no CAM pass, masks at its probability threshold."""
        return self.segmenter is not None

    def part_area(self, tags: list[str]) -> list[tuple[int, float]]:
        """Per tag: (index of its whole among `tags` or -1, its median area / its whole's), for
        the parts that lie at least `cfg.part_inside` inside their whole (`text_cam`)."""
        out = []
        for t in tags:
            whole = self.parts.get(t)
            a, b = self.median_area.get(t), self.median_area.get(whole)
            ok = whole in tags and a and b and self.cfg.part_inside is not None
            out.append((tags.index(whole), a / b) if ok else (-1, 0.0))
        return out

    def superpixels(self, image: WorkingImage) -> np.ndarray | None:
        """The working image's region labels (None: the pixel-threshold ablation)."""
        coarse = self.cfg.seg_region_coarse if self.reads_segmenter_only else self.cfg.region_coarse
        return superpixels(image.pixels, self.cfg.regions, coarse=coarse) if self.cfg.regions else None

    def region_masks(self, image: WorkingImage, maps: np.ndarray, labels: np.ndarray | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """(mask, region-smoothed map, threshold) of each soft map [K,H,W] of the image."""
        if labels is None:
            labels = self.superpixels(image)
        fixed = self.cfg.seg_threshold if self.reads_segmenter_only \
            else self.cfg.fixed_threshold  # a segmenter's probabilities are calibrated by its BCE
        return [regions_mask(m, labels, fixed, *self.cfg.threshold_range,
                             otsu_weight=self.cfg.otsu_weight) for m in maps]

    def label_image(self, image: WorkingImage, tags: list[str]) -> dict[str, dict]:
        """tag -> record with masks, maps (at working size) and all validator scores."""
        x, maps, views, peaks, box = self.score_maps(image, tags)
        masks, smooth, thresholds, view_masks = {}, {}, {}, {}
        labels = self.superpixels(image)
        for k, (tag, (m, s, t)) in enumerate(zip(tags, self.region_masks(image, maps, labels))):
            masks[tag], smooth[tag], thresholds[tag] = m, s, t
            view_masks[tag] = views[:, k] >= t
        if self.cfg.mutual and self.mutual:
            raw = {t: smooth[t] * peaks[k] for k, t in enumerate(tags)}
            for (a, b), gap in self.mutual.items():
                if a in masks and b in masks:
                    masks[a], masks[b] = self.resolve_mutual(masks, raw, a, b, gap, image, labels)
        stuff = [t for t in tags if t in self.stuff]
        if self.cfg.stuff_colours and self.cfg.regions and len(stuff) >= 2:  # else nothing is contested
            fine = labels if self.reads_segmenter_only else superpixels(image.pixels, self.cfg.regions)
            masks = reassign_by_colour(image.pixels, fine, masks, smooth, stuff, self.nests,
                                       self.cfg.stuff_colour_floor)
        masks = apply_nesting(masks, self.nests, self.occluders)
        text = self.texts.get(tags)

        def score_fn(batch: torch.Tensor) -> torch.Tensor:
            return tag_probabilities(self.model, batch, text)

        recs = validate_image(x, masks, view_masks, tags, score_fn, self.cfg.validators, box)
        for k, tag in enumerate(tags):
            r = recs[tag]
            m = r["mask"]
            inside = maps[k][m].mean() if m.any() else 0.0
            outside = maps[k][~m].mean() if (~m).any() else 0.0
            r.update(score_map=maps[k], threshold=thresholds[tag], cam_score=float(inside),
                     margin=float(inside - outside))
            r["quality"] = quality_score(r, confidence=self.reads_segmenter_only)
        return self.apply_floors(recs)

    def resolve_mutual(self, masks: dict, raw: dict, broad: str, specific: str, gap: float,
                       image=None, labels: np.ndarray | None = None):
        """The masks of two tags that imply each other (`ocean`, `beach`). Image-level tags can't
        tell them apart, so Stage A gives the broad tag both bands (`ocean` scores the sand as
        high as `beach` does) and the specific one the band along the shore. Their union is right.
        "appearance" (default) splits the union into two colour clusters, each to the tag whose
        look it matches (`appearance_split`, the looks fitted in `calibrate_masks` and oriented by
        the posts showing the broad tag alone; without such posts, no split). 150 posts, three
        Stage A runs: ocean 0.26-0.39 -> 0.71-0.85, beach -> 0.91-0.98. The other rules tried (the specific tag first; a split on each map's
        typical level) lost a tag wholesale on some runs (BENCHMARKS.md, sessions 5-7)."""
        a, b = masks[broad], masks[specific]
        split = None
        looks = self.looks.get((broad, specific))
        if self.cfg.mutual == "appearance" and gap >= self.cfg.mutual_min_gap and labels is not None and looks:
            split = appearance_split(image.pixels, labels, a | b, raw[broad], raw[specific], looks)
        return split if split is not None else (a, b)

    def apply_floors(self, recs: dict[str, dict]) -> dict[str, dict]:
        """The relative validator policy's last step (a no-op until `calibrate` set the floors)."""
        if self.floors is not None:
            for tag, r in recs.items():
                apply_floor(r, self.floors["floors"].get(tag, self.floors["default"]))
        return recs


def occluder_nests(nests: set[tuple[str, str]], stuff: set[str]) -> set[tuple[str, str]]:
    """The nests that are a thing in front of stuff (COCO's panoptic convention: stuff masks
    exclude the things on them). Containment could not tell them from parts: on two Stage A runs
    hat lay 0.47 / 0.33 inside 1girl, cloud 0.54 / 0.51 inside sky, long_hair 0.72 / 0.59."""
    return {(c, p) for c, p in nests if p in stuff and c not in stuff}


def apply_nesting(masks: dict[str, np.ndarray], nests: set[tuple[str, str]],
                  occluders: set[tuple[str, str]] = frozenset()) -> dict[str, np.ndarray]:
    """A part's pixels are its whole's (a dress is 1girl); a nested tag that is no part (an
    occluder: a cloud in the sky) stands in front of its whole and is cut out of it."""
    out = dict(masks)
    for c, p in sorted(nests):
        if c in masks and p in masks:
            # out[c]: a part of a part joins the whole too, as the in-place loop this replaced did
            out[p] = out[p] & ~out[c] if (c, p) in occluders else out[p] | out[c]
    return out


def _write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(arr).save(tmp, format="PNG", compress_level=1)  # 0/255 masks: still small
    os.replace(tmp, path)


def write_post(out: Path, post_id: int, recs: dict[str, dict], size: tuple[int, int], round_: int) -> list[dict]:
    """Write one post's PNGs, upsampled from working size to the image's own `size` (w, h), and
    return its index rows."""
    rows = []
    w, h = size

    def png(rel: str, mask: np.ndarray) -> None:
        _write_png(out / rel, upsample_mask(mask, size).astype(np.uint8) * 255)

    for tag, r in sorted(recs.items()):
        name = tag_filename(tag)
        score_rel = f"scores/{post_id}/{name}"
        score = upsample_maps(r["score_map"][None], size)[0]
        _write_png(out / score_rel, np.round(np.clip(score, 0, 1) * 255).astype(np.uint8))
        if r["accepted"]:
            mask_rel = f"masks/{post_id}/{name}"
            png(mask_rel, r["mask"])
            if r["rejected_mask"].any():
                png(f"rejected/{post_id}/{name}", r["rejected_mask"])
        else:
            mask_rel = f"rejected/{post_id}/{name}"
            png(mask_rel, r["mask"] | r["rejected_mask"])
        rows.append({"post_id": int(post_id), "tag": tag, "accepted": bool(r["accepted"]),
                     "reason": r["reason"], "area": float(r["mask"].mean()),
                     "cam_score": r["cam_score"], "consistency_iou": r["consistency_iou"],
                     "deletion_drop": r["deletion_drop"], "insertion_keep": r["insertion_keep"],
                     "prob": r["prob"], "quality": r["quality"], "threshold": r["threshold"],
                     "margin": r["margin"], "parts": int(r["parts"]),
                     "parts_rejected": int(r["parts_rejected"]), "width": int(w), "height": int(h),
                     "mask_path": mask_rel, "score_path": score_rel, "round": int(round_)})
    return rows


def _clean(v):
    if isinstance(v, float) and v != v:
        return None  # NaN -> null in JSON, NULL in Parquet
    return v


def done_posts(out: Path) -> set[int]:
    done: set[int] = set()
    for part in sorted((out / "parts").glob("*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            try:
                done.add(int(json.loads(line)["post_id"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a kill: that post is redone
    return done


def merge_index(out: Path) -> int:
    """Rebuild index.parquet from every part (atomic replace). Returns the number of rows."""
    import pandas as pd

    rows, seen = [], set()
    for part in sorted((out / "parts").glob("*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec["post_id"] in seen:
                continue
            seen.add(rec["post_id"])
            rows.extend(rec["rows"])
    df = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    df = df.sort_values(["post_id", "tag"], kind="stable").reset_index(drop=True)
    df = df.astype({"post_id": "int64", "accepted": "bool", "parts": "int64", "parts_rejected": "int64",
                    "width": "int64", "height": "int64", "round": "int64"})
    for c in ("area", "cam_score", "consistency_iou", "deletion_drop", "insertion_keep", "prob",
              "quality", "threshold", "margin"):
        df[c] = df[c].astype("float64")
    tmp = out / f"index.parquet.tmp{os.getpid()}"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out / "index.parquet")
    return len(df)


def calibration_posts(labeler: PseudoLabeler, records: list[dict], cfg: PseudoConfig, what: str = "calibrate"):
    """(record, working image, tags) of the first `calib_sample` posts of the whole manifest (by
    post_id, so every shard calibrates on the same ones) that load and carry tags, with a bar."""
    sample = sorted(records, key=lambda r: r["post_id"])[: cfg.validators.calib_sample]
    with Progress(what, total=len(sample), unit="post") as bar:
        for rec in sample:
            tags = [t for t in dict.fromkeys(rec["tags"]) if t]
            bar.update(1)
            try:
                image = labeler.load(rec)
            except ImageError:
                continue
            if tags:
                yield rec, image, tags


def calibrate_masks(labeler: PseudoLabeler, records: list[dict], cfg: PseudoConfig,
                    candidates: set[tuple[str, str]] = frozenset()) -> dict:
    """One pass over the first `calib_sample` posts of the whole manifest at the base scale, every
    tag competing with every other, for three run-level decisions:

    - which tags are mapped on the enlarged image (SNIP-style: each object size has the scale that
      suits it). A 128 px CAM blurs a small thing into a halo over its surroundings (a tree takes
      the grass stripes around it), while stuff enlarged loses its context (`sky` moves onto the
      ocean): measured on SynthBooru, zoom 2 for every tag took trees 0.20 -> 0.70 and sky 0.83 ->
      0.26. So a tag takes `fine_zoom` when its median mask covers less than `fine_area`;
    - each tag's typical (median) area, for a part's zoom in a big whole, and the typical share
      of the image's columns its mask reaches: stuff spans the image (`PseudoConfig.stuff_span`);
    - for each co-occurrence nesting candidate (child, parent), the share of the child's mask that
      lies inside the parent's (`decide_nests`): on SynthBooru a dress lies 0.85 inside the girl
      even while the two compete; a mountain 0.16 inside the sky, the background 0.12 inside the
      girl. (An insertion test, the child's pixels alone on grey, found none of the parts of
      `1girl`: the pooled classifier reads context.)
    - for each pair of tags that imply each other, with `mutual="appearance"`, each one's look
      (`fit_looks` over the colour clusters of their shared pixels)."""
    zoom_on = bool(cfg.fine_zoom) and cfg.fine_zoom != 1.0
    pairs = list(labeler.mutual) if cfg.mutual == "appearance" else []
    if not zoom_on and not candidates and not pairs:  # nothing needs the pass
        return {"tags": {}, "median_area": {}, "inside": []}
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
        # alone got it backwards on two of three Stage A runs (ocean, beach -> 0.07 / 0.00)
        anchor = anchors.get((a, b))
        fitted = fit_looks(samples, anchor=anchor) if anchor else None
        if fitted is not None:
            looks.append({"pair": [a, b], "looks": list(fitted), "images": len(samples), "anchor": anchor})
    median = {t: float(np.median(a)) for t, a in sorted(areas.items())}
    # a tag seen fewer than 3 times keeps the base scale
    zoom = {t: float(cfg.fine_zoom) for t, a in median.items()
            if zoom_on and len(areas[t]) >= 3 and a < cfg.fine_area}
    span = {t: float(np.median(v)) for t, v in sorted(spans.items())}
    return {"tags": zoom, "median_area": median, "median_span": span, "fine_zoom": cfg.fine_zoom,
            "fine_area": cfg.fine_area,
            "inside": [{"child": c, "parent": p, "shares": v} for (c, p), v in sorted(inside.items())],
            "looks": looks}


def solo_colours(labeler: PseudoLabeler, records: list[dict], broad: str, specific: str,
                 limit: int = 32) -> list[np.ndarray]:
    """Mean CIELAB colour of `broad`'s mask in the (first `limit`, by post_id) posts of the whole
    manifest that carry it without `specific`: the only images that show what `broad` alone
    looks like (`ocean` without `beach`: 7-9 of 600 SynthBooru scenes)."""
    out = []
    solo = [r for r in sorted(records, key=lambda r: r["post_id"])
            if broad in r["tags"] and specific not in r["tags"]][:limit]
    for rec in solo:
        try:
            image = labeler.load(rec)
        except ImageError:
            continue
        tags = [t for t in dict.fromkeys(rec["tags"]) if t]
        sm = labeler.score_maps(image, tags)
        mask, _, _ = labeler.region_masks(image, sm.maps[[tags.index(broad)]], labeler.superpixels(image))[0]
        colour = mean_lab(image.pixels, mask)
        if colour is not None:
            out.append(colour)
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


STRUCTURE_FILES = ("zoom.json", "nesting.json")


def inherit_structure(seg_train_config: dict, out: Path) -> list[str]:
    """Round 2 takes round 1's run-level decisions (which tags nest, which are parts and which
    occluders, the looks of tags that imply each other) from the pseudo-mask run the segmenter
    was trained on: how tags relate does not change between rounds, and the segmenter's own
    maps blur them (a hat half inside the girl made it an occluder of `1girl`; a moon learned
    over the sky made it a part). Returns the files copied; none when that run is not at hand
    (an oracle segmenter, a moved folder): then they are measured anew."""
    src = (seg_train_config.get("extra") or {}).get("pseudomasks")
    copied = []
    for name in STRUCTURE_FILES:
        f = Path(src) / name if src else None
        if f is not None and f.is_file() and not (out / name).exists():
            atomic_write_text(out / name, f.read_text())
            copied.append(name)
    return copied


def shared_json(path: Path, compute) -> dict:
    """A run-level decision every shard and every rerun must share (nesting pairs, zoomed tags,
    validator floors): read it when a shard or an earlier run already wrote it, else compute it
    and write it atomically."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    atomic_write_text(path, json.dumps(value, indent=1))
    return value


def run_pseudolabels(manifest, tag_desc, align_ckpt, out, segmenter_ckpt=None, shard: str | tuple | None = None,
                     device: str = "cpu", config: PseudoConfig | None = None, limit: int | None = None,
                     image_cache: str | None = None) -> dict:
    """Pseudo-label every (post, tag) of the manifest (this shard's part). Returns a summary."""
    from ..models.checkpoint import load_align
    from ..train.data import load_tag_descriptions, read_manifest

    cfg = config or PseudoConfig()
    shard_t = shard if isinstance(shard, tuple) else parse_shard(shard)
    records = read_manifest(manifest)
    if not records:
        raise GaudiError(f"manifest {manifest} has no posts")
    descs = load_tag_descriptions(tag_desc) if tag_desc else {}
    bundle = load_align(align_ckpt, device)
    model = bundle.model.eval()
    texts = TagTexts(model, bundle.vocab, bundle.text_emb, {**(bundle.descriptions or {}), **descs})
    segmenter = None
    round_ = 1
    if segmenter_ckpt:
        from ..models.segmenter import load_segmenter

        seg_bundle = load_segmenter(segmenter_ckpt, device)
        segmenter = seg_bundle.model
        round_ = 2
    out = Path(out)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    if segmenter is not None and cfg.inherit_structure:
        inherit_structure(seg_bundle.config, out)
    labeler = PseudoLabeler(model, bundle.preprocess, texts, cfg, segmenter=segmenter, device=device)
    labeler.cache = cache_for(manifest, image_cache)
    candidates = nest_candidates([r["tags"] for r in records]) if cfg.cam.mode == "nesting" else set()
    labeler.mutual = mutual_pairs([r["tags"] for r in records]) if cfg.mutual else {}
    zoom = shared_json(out / "zoom.json", lambda: calibrate_masks(labeler, records, cfg, candidates))
    labeler.looks = {tuple(r["pair"]): tuple(r["looks"]) for r in zoom.get("looks", [])}
    labeler.stuff = {t for t, v in zoom.get("median_span", {}).items() if v >= cfg.stuff_span}
    things = set(zoom.get("median_span", {})) - labeler.stuff
    nesting = shared_json(out / "nesting.json", lambda: {"pairs": sorted(decide_nests(
        {(r["child"], r["parent"]): r["shares"] for r in zoom.get("inside", [])}, cfg.nest_inside,
        things=things, thing_inside=cfg.thing_nest_inside))})
    nests = {tuple(p) for p in nesting["pairs"]}
    labeler.nests = nests
    labeler.zoom = {t: float(z) for t, z in zoom["tags"].items()}
    labeler.median_area = {t: float(a) for t, a in zoom.get("median_area", {}).items()}
    if cfg.part_inside is not None:  # the parts that lie well inside: dress 0.85, long_hair 0.76 in
        # 1girl (not the halos that also nest: flower 0.64 in grass, cloud 0.51 in sky)
        share = {(r["child"], r["parent"]): float(np.mean(r["shares"])) for r in zoom.get("inside", [])}
        for (c, p) in sorted(nests, key=lambda cp: share.get(cp, 0.0)):
            if share.get((c, p), 0.0) >= cfg.part_inside:
                labeler.parts[c] = p
    if cfg.cut_occluders:
        labeler.occluders = occluder_nests(nests, labeler.stuff)
    mine = shard_records(records, shard_t)
    if limit is not None:
        mine = mine[:limit]
    done = done_posts(out)
    todo = [r for r in mine if r["post_id"] not in done]
    calibrated: dict[int, dict] = {}  # this shard's posts labelled while calibrating
    v = cfg.validators
    if v.enabled and v.policy == "relative" and v.reject_quantile > 0:
        def floors() -> dict:
            found, kept = calibrate(labeler, records, cfg, keep={r["post_id"] for r in todo})
            calibrated.update(kept)
            return found

        labeler.floors = shared_json(out / "calibration.json", floors)
    # shards write it concurrently: each replaces it whole
    run_config = {"align_ckpt": str(align_ckpt), "segmenter_ckpt": str(segmenter_ckpt) if segmenter_ckpt else None,
                  "manifest": str(manifest), "round": round_, "pseudo": cfg.to_dict(),
                  "mutual_pairs": [[a, b, round(g, 3)] for (a, b), g in sorted(labeler.mutual.items())],
                  "parts": labeler.parts, "occluders": sorted(labeler.occluders)}
    atomic_write_text(out / "config.json", json.dumps(run_config, indent=1, default=str))
    part = out / "parts" / f"shard-{shard_t[0]}-of-{shard_t[1]}.jsonl"
    n_masks = n_acc = skipped = 0
    with Progress("pseudolabels", total=len(todo), unit="post") as bar, open(part, "a", encoding="utf-8") as fh:
        for rec in todo:
            tags = [t for t in dict.fromkeys(rec["tags"]) if t]
            try:
                image = labeler.load(rec)
            except ImageError as exc:
                log.warning("skipping post %s: %s", rec["post_id"], exc)
                bar.log(f"skipping post {rec['post_id']}: {exc}")
                skipped += 1
                bar.update(1)
                continue
            if rec["post_id"] in calibrated:
                recs = labeler.apply_floors(calibrated.pop(rec["post_id"]))
            else:
                recs = labeler.label_image(image, tags) if tags else {}
            rows = write_post(out, rec["post_id"], recs, image.size, round_) if tags else []  # own size
            fh.write(json.dumps({"post_id": rec["post_id"], "rows": [{k: _clean(v) for k, v in r.items()} for r in rows]}) + "\n")
            fh.flush()
            n_masks += len(rows)
            n_acc += sum(r["accepted"] for r in rows)
            bar.update(1, masks=n_masks, accepted=n_acc)
    n_rows = merge_index(out)
    return {"out": str(out), "posts": len(mine), "processed": len(todo) - skipped, "skipped_done": len(mine) - len(todo),
            "skipped_unreadable": skipped, "masks": n_masks, "accepted": n_acc, "index_rows": n_rows,
            "nesting": sorted(nests), "round": round_, "shard": list(shard_t)}
