"""The data a quality bench runs on: SynthBooru generated on the spot (the default), or any folder
in the layout of `../shared/datasets/ccp-dev`:

    DIR/train/images/NAME.{jpg,png,...} + NAME.txt   tags only: what the weak pipeline learns from
    DIR/train/gt/NAME/<tag>.png                      optional masks of some train images: scoring
                                                     pseudo-masks and validators, and the oracle
    DIR/test/images/NAME.* + NAME.txt                the photos the segmenters are scored on
    DIR/test/gt/NAME/<tag>.png                       their masks
    DIR/tag_descriptions.json                        optional {tag: [description, ...]}

A folder split becomes a manifest (`manifest.csv` in the bench's own folder; the images are read
in place); the weak pipeline reads the manifest and the descriptions, never `gt/`.
"""
from __future__ import annotations

import csv
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import GaudiError
from ..tags import split_tags

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}
TEST_ID_OFFSET = 10_000_000  # test post ids never collide with train ones


@dataclass
class BenchData:
    name: str
    train_manifest: Path
    test_manifest: Path
    train_gt: Path | None  # masks of (some of) the train images, or None
    test_gt: Path
    descriptions: Path | None
    oracle_manifest: Path | None  # the train images that have masks (the oracle learns from these)


def synth_data(work: Path, n_train: int, n_test: int, size: tuple[int, int], seed: int) -> BenchData:
    from .. import synth

    tr = synth.generate(work / "train", n_train, seed=seed, size=size, split="train")
    te = synth.generate(work / "test", n_test, seed=seed, size=size, split="test")
    return BenchData("SynthBooru", Path(tr["manifest"]), Path(te["manifest"]), work / "train" / "gt",
                     work / "test" / "gt", Path(tr["tag_descriptions"]), Path(tr["manifest"]))


def folder_data(dataset: Path, work: Path, train_limit: int | None = None, seed: int = 0) -> BenchData:
    """Manifests for a dataset folder. `train_limit` keeps a random sample of that many train
    images (seeded; which images have masks plays no part in the choice)."""
    dataset = Path(dataset)
    for need in ("train/images", "test/images", "test/gt"):
        if not (dataset / need).is_dir():
            raise GaudiError(f"--dataset {dataset}: no {need}/ (expected the layout of ccp-dev: "
                             "train/images, optional train/gt, test/images, test/gt)")
    train = _tagged_images(dataset / "train" / "images")
    test = _tagged_images(dataset / "test" / "images")
    if train_limit and train_limit < len(train):
        train = sorted(random.Random(seed).sample(train, train_limit), key=lambda p: p[0].name)
    work.mkdir(parents=True, exist_ok=True)
    train_gt = dataset / "train" / "gt" if (dataset / "train" / "gt").is_dir() else None
    tm = _write_manifest(work / "train" / "manifest.csv", train, 1)
    om = None
    if train_gt is not None:
        with_gt = [(p, t) for p, t in train if (train_gt / p.stem).is_dir()]
        if with_gt:
            ids = {p: i + 1 for i, (p, _) in enumerate(train)}  # the same post ids as in the train manifest
            om = _write_manifest(work / "train" / "manifest_gt.csv", with_gt, ids)
    desc = dataset / "tag_descriptions.json"
    return BenchData(dataset.name, tm, _write_manifest(work / "test" / "manifest.csv", test, TEST_ID_OFFSET + 1),
                     train_gt, dataset / "test" / "gt", desc if desc.is_file() else None, om)


def _tagged_images(folder: Path) -> list[tuple[Path, list[str]]]:
    out = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        side = p.with_suffix(".txt")
        tags = split_tags(side.read_text(encoding="utf-8", errors="replace")) if side.is_file() else []
        if tags:
            out.append((p.resolve(), tags))
    if not out:
        raise GaudiError(f"{folder}: no images with a NAME.txt tag file")
    return out


def _write_manifest(path: Path, items: list[tuple[Path, list[str]]], first_id) -> Path:
    """`first_id`: an int (ids count up from it) or {image path: post id}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        wr = csv.DictWriter(fh, fieldnames=["post_id", "image_path", "tags", "md5"])
        wr.writeheader()
        for i, (p, tags) in enumerate(items):
            pid = first_id[p] if isinstance(first_id, dict) else first_id + i
            wr.writerow({"post_id": pid, "image_path": str(p), "tags": " ".join(tags),
                         "md5": hashlib.md5(p.read_bytes()).hexdigest()})
    return path
