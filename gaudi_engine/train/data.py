"""Training data: the manifest (`gaudi export-manifest` / SynthBooru), tag descriptions, and the
Stage A dataset. Each picture's model canvas (`imaging`: the working image, decoded once and
cached on disk, letterboxed to the model's input) is held in memory as uint8; augmentation runs
on tensors, so data loading never bounds the step time on small CPU runs."""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as Fn

from ..errors import GaudiError
from ..tags import split_tags

log = logging.getLogger(__name__)
_warned_no_desc: set[str] = set()


def read_manifest(path: str | os.PathLike, workspace_root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Rows as dicts: post_id:int, image_path:Path (absolute), tags:list[str], width, height, md5.
    A relative image_path is resolved against the manifest's folder, then the workspace."""
    path = Path(path)
    if not path.is_file():
        raise GaudiError(f"manifest not found: {path}")
    ws_root = Path(workspace_root or os.environ.get("GAUDI_WORKSPACE") or os.getcwd())
    rows: list[dict[str, Any]] = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"post_id", "image_path", "tags"} - set(reader.fieldnames or [])
            if missing:
                raise GaudiError(f"manifest {path} lacks column(s) {', '.join(sorted(missing))}")
            for i, r in enumerate(reader):
                try:
                    post_id = int(r["post_id"])
                except (TypeError, ValueError):
                    raise GaudiError(f"manifest {path} line {i + 2}: post_id {r['post_id']!r} is not an integer") from None
                p = Path(r["image_path"] or "")
                if not p.is_absolute():
                    first = path.parent / p
                    p = first if first.exists() or not (ws_root / p).exists() else ws_root / p
                rows.append({"post_id": post_id, "image_path": p.resolve(),
                             "tags": split_tags(r.get("tags") or ""), "md5": r.get("md5") or "",
                             "width": int(r["width"]) if (r.get("width") or "").isdigit() else None,
                             "height": int(r["height"]) if (r.get("height") or "").isdigit() else None})
    except UnicodeDecodeError as exc:
        raise GaudiError(f"manifest {path} is not UTF-8 CSV") from exc
    except csv.Error as exc:
        raise GaudiError(f"manifest {path} is not valid CSV: {exc}") from exc
    if not rows:
        raise GaudiError(f"manifest {path} has no rows (export posts with images first)")
    return rows


def load_tag_descriptions(path: str | os.PathLike | None) -> dict[str, list[str]]:
    """`{tag: [description, ...]}` (a bare string is one description). None → no descriptions."""
    if path is None:
        return {}
    from ..text.descriptions_json import read_descriptions_json

    path = Path(path)
    if not path.is_file():
        raise GaudiError(f"tag descriptions file not found: {path}")
    return {str(tag).strip().replace(" ", "_"): [t.strip() for t in texts if t.strip()]
            for tag, texts in read_descriptions_json(path).items()}


def warn_missing_descriptions(tags: list[str], descriptions: dict[str, list[str]]) -> list[str]:
    """Tags without descriptions use their own name as text; say so once per tag."""
    missing = [t for t in tags if not descriptions.get(t)]
    for t in missing:
        if t not in _warned_no_desc:
            _warned_no_desc.add(t)
            log.warning("tag '%s' has no description; using its name as text", t)
    return missing


def load_canvas(rec: dict, pre, cache=None):
    """(uint8 [S,S,3] model canvas, Letterbox) of a manifest row's picture, or None (with a
    warning) when the file is missing or unreadable."""
    from ..imaging import ImageError, canvas, load_working

    try:
        work = load_working(rec["image_path"], pre, cache, rec.get("md5") or None)
    except ImageError as exc:
        log.warning("skipping post %s: %s", rec.get("post_id"), exc)
        return None
    return canvas(work.pixels, pre)


def build_vocab(records: list[dict], min_count: int = 1) -> list[str]:
    counts: dict[str, int] = {}
    for r in records:
        for t in r["tags"]:
            counts[t] = counts.get(t, 0) + 1
    return sorted(t for t, c in counts.items() if c >= min_count)


class TagImageDataset(torch.utils.data.Dataset):
    """Stage A items: {"image": normalised float [3,h,w], "labels": multi-hot [V], "index"}: in
    training a crop of the picture's model canvas (short side S, aspect kept) of its bucket's shape
    (`imaging.training_shape`; `bucket_keys` batch alike shapes together), at a random place;
    without training the whole canvas [3,H,W]. Augmentation (train=True): horizontal flip, mild random resized crop, mild
    colour jitter; each (seed, epoch, index) draws the same augmentation, so runs and resumes are
    reproducible."""

    def __init__(self, records: list[dict], vocab: list[str], preprocess: dict[str, Any],
                 train: bool = True, seed: int = 0, mosaic_p: float = 0.0, cache=None):
        from ..imaging import Preprocess, training_shape
        from ..progress import Progress

        pre = Preprocess.from_dict(preprocess)
        self.vocab = list(vocab)
        index = {t: i for i, t in enumerate(self.vocab)}
        self.size = pre.image_size
        self.mean = torch.tensor(pre.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(pre.std, dtype=torch.float32).view(3, 1, 1)
        self.train, self.seed, self.epoch, self.mosaic_p = train, seed, 0, mosaic_p
        images, labels, kept, self.boxes = [], [], [], []
        quiet = int(os.environ.get("RANK", 0)) != 0  # under torchrun one rank reports progress
        with Progress("load-images", total=len(records), unit="img", disable=True if quiet else None,
                      jsonl=os.devnull if quiet else None, prelude=True) as bar:
            for r in records:
                loaded = load_canvas(r, pre, cache)
                bar.update()
                if loaded is None:
                    continue
                arr = loaded[0]
                self.boxes.append(loaded[1])
                y = torch.zeros(len(self.vocab))
                for t in r["tags"]:
                    if t in index:
                        y[index[t]] = 1.0
                images.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
                labels.append(y)
                kept.append(r)
        if not images:
            raise GaudiError("no readable images in the manifest")
        self.images = images  # uint8 [3,H,W] canvases: 600 2:3 pictures at 128 px ≈ 44 MB
        self.labels = torch.stack(labels)
        self.records = kept
        self.bucket_keys = [training_shape(b, pre) for b in self.boxes]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _augment(self, img: torch.Tensor, g: torch.Generator, kept: float = 1.0) -> torch.Tensor:
        """`kept`: the share of the picture its window already holds; the crop keeps >= 65 % of the
        picture in all (a tag's object cut out is a wrong label)."""
        sh, sw = img.shape[-2:]
        r = torch.rand(8, generator=g).tolist()
        if r[0] < 0.5:
            img = img.flip(-1)
        low = min(1.0, 0.65 / max(kept, 1e-6))
        if r[1] < 0.7 and low < 1.0:  # random resized crop, scale low–1, aspect 3/4–4/3
            area = low + (1.0 - low) * r[2]
            aspect = float(np.exp(np.log(3 / 4) + r[3] * (np.log(4 / 3) - np.log(3 / 4))))
            cw = int(round(sw * min(1.0, (area * aspect) ** 0.5)))
            ch = int(round(sh * min(1.0, (area / aspect) ** 0.5)))
            x0, y0 = int(r[4] * (sw - cw)), int(r[5] * (sh - ch))
            img = Fn.interpolate(img[None, :, y0:y0 + ch, x0:x0 + cw], size=(sh, sw), mode="bilinear",
                                 align_corners=False)[0]
        # colour jitter: brightness, contrast, saturation ±15 %
        b, c, sat = (1 + 0.3 * (torch.rand(3, generator=g) - 0.5)).tolist()
        grey = img.mean(0, keepdim=True)
        img = (grey + (img - grey) * sat)
        img = (img - img.mean()) * c + img.mean()
        return (img * b).clamp(0, 1)

    def window(self, i: int, g: torch.Generator | None) -> tuple[torch.Tensor, float]:
        """Picture i's training crop in 0..1 (its bucket's shape; random with a generator, else
        centred) and the share of the picture it holds."""
        from ..imaging import picture_window

        u = tuple(torch.rand(2, generator=g).tolist()) if g is not None else None
        (h, w), box = self.bucket_keys[i], self.boxes[i]
        return picture_window(self.images[i], box, (h, w), u).float() / 255.0, min(1.0, h * w / (box.h * box.w))

    def _augment_window(self, i: int, g: torch.Generator) -> torch.Tensor:
        img, kept = self.window(i, g)
        return self._augment(img, g, kept)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        y = self.labels[i]
        if not self.train:  # the whole canvas: evaluation sees the whole picture
            img = self.images[i].float() / 255.0
        else:
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, i)) & 0x7FFFFFFF)
            img = self._augment_window(i, g)
            if self.mosaic_p > 0 and float(torch.rand(1, generator=g)) < self.mosaic_p:
                # two scenes side by side, labels united: a tag must be found where it is, not
                # guessed from the scene's context (context decoupling, as CDA/CutMix do for WSSS)
                j = int(torch.randint(len(self), (1,), generator=g))
                other = self._augment_window(j, g)
                h, w = img.shape[-2:]
                a = Fn.interpolate(img[None], size=(h, w // 2), mode="bilinear", align_corners=False)[0]
                b = Fn.interpolate(other[None], size=(h, w - w // 2), mode="bilinear", align_corners=False)[0]
                img, y = torch.cat([a, b], -1), torch.maximum(y, self.labels[j])
        return {"image": (img - self.mean) / self.std, "labels": y, "index": torch.tensor(i)}
