"""Per-image pseudo-labelling: one post's soft maps (round 1: text-CAM -> affinity; round 2: the
round-1 segmenter's probabilities), their region masks, the rules between tags (mutual pairs, stuff
colours, nesting) and the validators' verdicts. Run-level decisions (zooms, nests, parts, looks,
floors) are set on the labeller by the run driver (`run`), which measures them (`calibration`)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..imaging import Preprocess, WorkingImage, WorkingImageCache, load_working, maps_to_working, model_input
from ..models.tag_texts import TagTexts
from . import affinity as aff
from .cam import tag_probabilities, text_cam
from .objectness import objectness
from .prototypes import prototype_maps
from .config import PseudoConfig
from .regions import appearance_split, reassign_by_colour, regions_mask, superpixels
from .validators import apply_floor, quality_score, validate_image


def segmenter_maps(segmenter, x: torch.Tensor, text: torch.Tensor, box, shape: tuple[int, int]) -> torch.Tensor:
    """[K, h, w] a segmenter's probabilities for one model input x [3,H,W], cropped to the picture
    (`box`) and resized to its working `shape` (round 2 and `infer` read them alike)."""
    canvas = segmenter.probabilities(x.unsqueeze(0), text, tuple(x.shape[-2:]))[0]
    return maps_to_working(canvas, box, shape)


def per_zoom(probs: torch.Tensor, cam, step) -> torch.Tensor:
    """probs [1,K,h,w] with each tag's maps replaced by `step(probs, feats, sel)` ([1,n,h,w] for the
    n tags `sel` selects), run once per zoom on the features of the zoom those tags were seen at."""
    out = probs.clone()
    for z, feats in cam.zoom_feats.items():
        sel = cam.zoom == z
        if sel.any():
            out[:, sel] = step(probs, feats, sel)
    return out


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
        self.ubiquitous: set[str] = set()  # tags on nearly every post (`objectness.ubiquitous_tags`)
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
        common = torch.tensor([t in self.ubiquitous for t in tags])
        if common.any():  # their own maps cannot tell them from the background (`objectness`)
            obj = objectness(self.model, x, tuple(probs.shape[-2:]), self.cfg.objectness_zoom).to(probs.device)
            probs[:, common] = probs[:, common] * obj
            views[:, common] = views[:, common] * obj.to(views.device)
        if self.cfg.prototypes:  # each tag's look against the image's unclaimed pixels (`prototypes`)
            probs = per_zoom(probs, cam, lambda p, f, sel: p[:, sel] * prototype_maps(p[0], f)[sel])
        if self.cfg.affinity:  # each tag propagates along the features of the zoom it was seen at
            probs = per_zoom(probs, cam, lambda p, f, sel: aff.refine(
                p[:, sel], f.unsqueeze(0), self.cfg.aff_radius, self.cfg.aff_beta, self.cfg.aff_iters))
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
        the posts showing the broad tag alone; without such posts, no split). The other rules
        tried (the specific tag first; a split on each map's typical level) lost a tag wholesale
        on some runs (BENCHMARKS.md, sessions 5-7)."""
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
    exclude the things on them). Containment alone could not tell them from parts: a hat lies
    about as far inside 1girl as a cloud inside the sky (BENCHMARKS.md)."""
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
