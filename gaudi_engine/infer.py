"""Inference: image + tags -> one mask per tag (DESIGN §3 JSON with COCO RLE, overlay PNG).

With a segmenter checkpoint every requested tag is read off ONE backbone pass (pixel embeddings
dotted with the tags' text embeddings). With only the align checkpoint the text-CAM path is
used (CAM + affinity, no validators). Either way each tag's map is then averaged inside the
image's own superpixels (felzenszwalb by default), so masks follow the drawn edges. All of it
runs on the picture's working image (`imaging`: aspect kept, a fixed short side tied to the
model's input), so a mask does not change with the picture's pixel count; each tag's map is
upsampled to the image's own size only to be thresholded and encoded. Tags are never
exclusive: one sigmoid each.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from . import rle
from .errors import GaudiError
from .filenames import shown
from .imaging import ImageError, Preprocess, WorkingImage, load_working, open_image, to_working, upsample_maps
from .tags import SidecarReader, split_tags as parse_tags  # parse_tags: the name the studio and CLI use

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
           (0, 128, 128), (220, 190, 255), (170, 110, 40), (128, 0, 0), (170, 255, 195)]


class Predictor:
    """Per-tag masks for an image. Loads the checkpoints once; thread-unsafe (one per worker)."""

    def __init__(self, align_ckpt=None, segmenter_ckpt=None, device: str = "cpu", descriptions: dict | None = None,
                 regions: str | None = "felzenszwalb"):
        from .models.checkpoint import load_align
        from .models.tag_texts import TagTexts
        from .pseudo.config import PseudoConfig
        from .pseudo.labeler import PseudoLabeler

        if not align_ckpt and not segmenter_ckpt:
            raise GaudiError("infer needs --align-ckpt and/or --segmenter-ckpt")
        self.device = device
        self.align_ckpt, self.segmenter_ckpt = align_ckpt, segmenter_ckpt
        self.segmenter = None
        if segmenter_ckpt:
            from .models.segmenter import load_segmenter

            sb = load_segmenter(segmenter_ckpt, device)
            self.segmenter = sb.model.eval()
            model, preprocess, vocab, text_emb, descs = sb.model.align, sb.preprocess, sb.vocab, sb.text_emb, sb.descriptions
        else:
            ab = load_align(align_ckpt, device)
            model, preprocess, vocab, text_emb, descs = ab.model, ab.preprocess, ab.vocab, ab.text_emb, ab.descriptions
        self.model = model.eval()
        self.preprocess = Preprocess.from_dict(preprocess)
        self.texts = TagTexts(self.model, vocab, text_emb, {**(descs or {}), **(descriptions or {})})
        self.regions = regions if regions not in (None, "none") else None
        self.labeler = PseudoLabeler(self.model, preprocess, self.texts, PseudoConfig(regions=self.regions),
                                     device=device)
        self.mode = "segmenter" if self.segmenter is not None else "cam"

    def working(self, image) -> WorkingImage:
        """A PIL image, a path or a WorkingImage -> the WorkingImage this model reads."""
        if isinstance(image, WorkingImage):
            return image
        if isinstance(image, (str, os.PathLike)):
            try:
                return load_working(image, self.preprocess)
            except ImageError as exc:
                raise GaudiError(str(exc)) from None
        return to_working(open_image(image), self.preprocess)

    @torch.no_grad()
    def working_probabilities(self, image, tags: list[str]) -> np.ndarray:
        """[K, h, w] per-tag probabilities at the picture's working size."""
        from .imaging import model_input
        from .pseudo.labeler import segmenter_maps
        from .pseudo.regions import region_score_map, superpixels

        work = self.working(image)
        if self.segmenter is not None:
            x, box = model_input(work, self.preprocess)
            maps = segmenter_maps(self.segmenter, x.to(self.device), self.texts.get(tags), box, work.shape)
            maps = maps.cpu().numpy()
        else:
            maps = self.labeler.score_maps(work, tags).maps
        if not self.regions or not len(maps):
            return maps
        labels = superpixels(work.pixels, self.regions)
        return np.stack([region_score_map(m, labels) for m in maps])

    def probabilities(self, image, tags: list[str]) -> np.ndarray:
        """[K, H, W] per-tag probabilities at the image's own size."""
        work = self.working(image)
        return upsample_maps(self.working_probabilities(work, tags), work.size)

    def predict(self, image, tags: list[str] | str, threshold: float = 0.5, name: str | None = None) -> dict:
        """DESIGN §3 JSON for one PIL image, path or WorkingImage; masks at the image's own size."""
        if isinstance(image, (str, os.PathLike)):
            name = name or str(image)
        tags = parse_tags(tags)
        if not tags:
            raise GaudiError("no tags to segment (pass --tags or a sidecar NAME.txt)")
        work = self.working(image)
        probs = self.working_probabilities(work, tags)
        w, h = work.size
        out = []
        for tag, p in zip(tags, probs):  # one full-size map at a time: memory stays one map
            m_small = p >= threshold
            # upsampled transposed: the mask's column-major order (RLE's) is then its memory order
            m = (upsample_maps(p.T[None], work.size[::-1])[0] >= threshold).T
            out.append({"tag": tag, "score": float(p[m_small].mean()) if m_small.any() else float(p.max()),
                        "area": int(m.sum()), "bbox": rle.bbox(m), "mask": rle.encode(m)})
        return {"image": name, "width": int(w), "height": int(h), "tags": out,
                "model": {"mode": self.mode, "align_ckpt": str(self.align_ckpt) if self.align_ckpt else None,
                          "segmenter_ckpt": str(self.segmenter_ckpt) if self.segmenter_ckpt else None,
                          "threshold": float(threshold)}}

    @staticmethod
    def overlay(image, result: dict, alpha: float = 0.45):
        """RGB PIL image with each tag's mask tinted in its own colour (later tags on top), at the
        size of `image` (a preview of the picture may be smaller than the masks)."""
        from PIL import Image

        base = np.asarray(image.convert("RGB"), dtype=np.float32)
        out = base.copy()
        for i, t in enumerate(result["tags"]):
            m = rle.decode(t["mask"])
            if m.shape != base.shape[:2]:
                m = np.asarray(Image.fromarray(m).resize(image.size, Image.NEAREST))
            col = np.array(PALETTE[i % len(PALETTE)], np.float32)
            out[m] = (1 - alpha) * out[m] + alpha * col
        return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


OVERLAY_SIDE = 1024  # overlays are previews: long side at most this (the JSON and masks are full size)


def save_masks(result: dict, masks_dir: Path) -> None:
    """M/NAME/<tag>.png (0/255 at the image's own size)."""
    from PIL import Image

    from .tags import tag_filename

    masks_dir.mkdir(parents=True, exist_ok=True)
    for t in result["tags"]:
        Image.fromarray(rle.decode(t["mask"]).astype(np.uint8) * 255).save(masks_dir / tag_filename(t["tag"]),
                                                                          compress_level=1)


def _read(predictor: Predictor, path, want_preview: bool) -> WorkingImage:
    """The picture decoded once: its working image, and a preview for the overlay if wanted."""
    return load_working(path, predictor.preprocess, preview_side=OVERLAY_SIDE if want_preview else None)


def infer_single(predictor: Predictor, image_path, tags, out_json=None, viz=None, masks_dir=None,
                 threshold: float = 0.5) -> dict:
    try:
        work = _read(predictor, image_path, bool(viz))
    except ImageError as exc:
        raise GaudiError(str(exc)) from None
    sidecars = SidecarReader()
    tags = parse_tags(tags) or _sidecar_tags(Path(image_path), sidecars)
    if sidecars.note():
        log.warning("%s", sidecars.note())
    result = predictor.predict(work, tags, threshold, name=shown(image_path))
    if out_json:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(result), encoding="utf-8")
    if viz:
        Path(viz).parent.mkdir(parents=True, exist_ok=True)
        predictor.overlay(work.preview, result).save(viz)
    if masks_dir:
        save_masks(result, Path(masks_dir) / Path(image_path).stem)
    return result


def _sidecar_tags(path: Path, sidecars: SidecarReader) -> list[str]:
    side = path.with_suffix(".txt")
    return sidecars.read(side)[0] if side.is_file() else []


def infer_batch(predictor: Predictor, images_dir, out_dir, tags=None, masks_dir=None,
                threshold: float = 0.5) -> dict:
    """Every image of a folder: D/NAME.json + D/NAME.png (+ M/NAME/<tag>.png). A file that cannot
    be used (unreadable, no tags) is named in one warning line and skipped: one bad file never
    ends the batch."""
    from .progress import Progress

    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise GaudiError(f"--images {images_dir} is not a folder")
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise GaudiError(f"no images in {images_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed = parse_tags(tags)
    sidecars = SidecarReader()
    done, skipped = 0, []
    with Progress("infer", total=len(files), unit="img") as bar:
        for p in files:
            try:
                _infer_one(predictor, p, fixed or _sidecar_tags(p, sidecars), out_dir, masks_dir, threshold)
                done += 1
            except GaudiError as exc:  # ImageError is one: the file is named in its message
                name = shown(p.name)
                reason = str(exc).removeprefix(f"{name}: ")
                log.warning("skipping %s: %s", name, reason)
                skipped.append(name)
            bar.update(1)
        if sidecars.note():
            log.warning("%s", sidecars.note())
    return {"images": done, "skipped": len(skipped), "skipped_files": skipped, "out_dir": str(out_dir)}


def _infer_one(predictor: Predictor, path: Path, tags: list[str], out_dir: Path, masks_dir, threshold: float) -> None:
    """One picture of a batch: its JSON, overlay and masks; GaudiError when it cannot be used."""
    if not tags:
        raise GaudiError(f"no --tags and no sidecar {shown(path.with_suffix('.txt').name)}")
    image = _read(predictor, path, True)
    result = predictor.predict(image, tags, threshold, name=shown(path.name))
    (out_dir / f"{path.stem}.json").write_text(json.dumps(result), encoding="utf-8")
    predictor.overlay(image.preview, result).save(out_dir / f"{path.stem}.png")
    if masks_dir:
        save_masks(result, Path(masks_dir) / path.stem)
