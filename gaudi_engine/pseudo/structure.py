"""A run's structure: what the pseudo-labeller learns about how tags relate, measured once on the
first posts of the whole manifest and shared by every shard, rerun and round 2. One file,
`structure.json`, whose fields say what they are:

  zoomed_tags         tag -> zoom: small things, mapped on the enlarged image (`fine_zoom`)
  median_area         tag -> median share of the image its round-1 mask covers
  median_span         tag -> median share of the image's columns its mask reaches
  stuff_tags          tags whose masks typically span the image (`stuff_span`)
  containment_shares  [{child, parent, shares}]: how much of each candidate part's mask lay inside
                      its whole's, per calibration post
  nests               [[child, parent]]: the candidates that nest (`decide_nests`)
  parts               part -> whole: the nests that lie `part_inside` inside their whole
  occluders           [[thing, stuff]]: nests that stand in front of their whole (cut out of it)
  mutual_pairs        [[broad, specific, gap]]: tags that imply each other in this manifest
  looks               [{pair, looks, images, anchor}]: each mutual pair's colour models

Runs made before this file kept the same decisions in `zoom.json` (zoomed tags, areas, spans,
shares as "inside", looks) and `nesting.json` (the nests as "pairs"); they are still read.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_text
from .cam import decide_nests
from .config import PseudoConfig
from .labeler import PseudoLabeler, occluder_nests

STRUCTURE_FILE = "structure.json"
OLD_STRUCTURE_FILES = ("zoom.json", "nesting.json")  # runs before structure.json


def decide_structure(measured: dict, cfg: PseudoConfig, mutual: dict[tuple[str, str], float],
                     nests: set[tuple[str, str]] | None = None) -> dict:
    """The run's structure from the calibration pass's measurements (`calibrate_masks`): which tags
    are stuff, which candidates nest (unless `nests` is given), which nests are parts and which
    occluders."""
    span = measured.get("median_span", {})
    stuff = {t for t, v in span.items() if v >= cfg.stuff_span}
    shares = {(r["child"], r["parent"]): r["shares"] for r in measured.get("containment_shares", [])}
    if nests is None:
        nests = decide_nests(shares, cfg.nest_inside, things=set(span) - stuff, thing_inside=cfg.thing_nest_inside)
    parts: dict[str, str] = {}
    if cfg.part_inside is not None:  # the parts that lie well inside (a dress in 1girl), not the
        # halos that also nest (a flower in the grass, a cloud in the sky)
        mean = {cp: float(np.mean(v)) for cp, v in shares.items()}
        for (c, p) in sorted(nests, key=lambda cp: mean.get(cp, 0.0)):
            if mean.get((c, p), 0.0) >= cfg.part_inside:
                parts[c] = p
    occluders = occluder_nests(nests, stuff) if cfg.cut_occluders else set()
    return {"zoomed_tags": measured.get("zoomed_tags", {}), "median_area": measured.get("median_area", {}),
            "median_span": span, "stuff_tags": sorted(stuff),
            "containment_shares": measured.get("containment_shares", []),
            "nests": [list(cp) for cp in sorted(nests)], "parts": parts,
            "occluders": [list(cp) for cp in sorted(occluders)],
            "mutual_pairs": [[a, b, g] for (a, b), g in sorted(mutual.items())],
            "looks": measured.get("looks", [])}


def old_measurements(folder: Path) -> dict | None:
    """The measurements of a run made before `structure.json` (its `zoom.json`), or None."""
    zoom = Path(folder) / "zoom.json"
    if not zoom.is_file():
        return None
    z = json.loads(zoom.read_text())
    return {"zoomed_tags": z.get("tags", {}), "median_area": z.get("median_area", {}),
            "median_span": z.get("median_span", {}), "containment_shares": z.get("inside", []),
            "looks": z.get("looks", [])}


def old_nests(folder: Path) -> set[tuple[str, str]] | None:
    """The nests of a run made before `structure.json` (its `nesting.json`), or None."""
    nesting = Path(folder) / "nesting.json"
    return {tuple(p) for p in json.loads(nesting.read_text())["pairs"]} if nesting.is_file() else None


def run_structure(out: Path, measure, cfg: PseudoConfig, mutual: dict[tuple[str, str], float]) -> dict:
    """The run's structure: read when a shard, an earlier run or round 1 (`inherit_structure`)
    already wrote it, else measured (`measure()` -> `calibrate_masks`'s dict; an older run's
    `zoom.json` / `nesting.json` stand in for what they hold) and written."""
    path = Path(out) / STRUCTURE_FILE
    if path.exists():
        return json.loads(path.read_text())
    measured = old_measurements(out)
    value = decide_structure(measure() if measured is None else measured, cfg, mutual, old_nests(out))
    atomic_write_text(path, json.dumps(value, indent=1))
    return value


def apply_structure(labeler: PseudoLabeler, structure: dict) -> None:
    """Set the run's structure on the labeller."""
    labeler.looks = {tuple(r["pair"]): tuple(r["looks"]) for r in structure.get("looks", [])}
    labeler.stuff = set(structure.get("stuff_tags", []))
    labeler.nests = {tuple(p) for p in structure.get("nests", [])}
    labeler.zoom = {t: float(z) for t, z in structure.get("zoomed_tags", {}).items()}
    labeler.median_area = {t: float(a) for t, a in structure.get("median_area", {}).items()}
    labeler.parts = dict(structure.get("parts", {}))
    labeler.occluders = {tuple(p) for p in structure.get("occluders", [])}


def inherit_structure(seg_train_config: dict, out: Path) -> list[str]:
    """Round 2 takes round 1's structure (which tags nest, which are parts and which occluders,
    the looks of tags that imply each other) from the pseudo-mask run the segmenter was trained
    on: how tags relate does not change between rounds, and the segmenter's own maps blur them
    (a hat half inside the girl made it an occluder of `1girl`; a moon learned over the sky made
    it a part). Returns the files copied; none when that run is not at hand (an oracle segmenter,
    a moved folder) or this run already has its structure: then it is measured anew or kept."""
    src = (seg_train_config.get("extra") or {}).get("pseudomasks")
    out = Path(out)
    if not src or any((out / name).exists() for name in (STRUCTURE_FILE, *OLD_STRUCTURE_FILES)):
        return []
    src = Path(src)
    names = [STRUCTURE_FILE] if (src / STRUCTURE_FILE).is_file() else OLD_STRUCTURE_FILES
    copied = []
    for name in names:
        if (src / name).is_file():
            atomic_write_text(out / name, (src / name).read_text())
            copied.append(name)
    return copied
