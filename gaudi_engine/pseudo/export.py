"""A pseudo-mask run's accepted masks, written for other tools (studio's Pseudo-masks tab and
`gaudi export-pseudomasks`):

  png       <run>_masks.zip    <post_id>/<tag>.png binary masks (0/255, image size)
  scores    <run>_scores.zip   <post_id>/<tag>.png soft score maps (0..255 = 0..1) of the same masks
  coco      <run>_coco.json    COCO instances, one RLE annotation (iscrowd=1) per (image, tag)
  cvat      <run>_cvat.zip     CVAT "Segmentation mask 1.1" (Pascal VOC layout + labelmap.txt)
  fiftyone  <run>_fiftyone.zip FiftyOne `ImageSegmentationDirectory` (data/, labels/, mask_targets.json)

The PNG and COCO exports keep every mask whole (they may overlap: a `shirt` inside `1girl`). The
CVAT and FiftyOne formats are one label per pixel, so overlaps are resolved by one rule, written
into each export: **the smaller mask is on top** (masks are painted largest first; equal areas:
the tag later in alphabetical order on top). `read_coco` and `read_cvat` read the files back.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .. import rle
from ..errors import GaudiError
from ..catalogue.manifest import manifest_images
from ..workspace import Workspace

FORMATS = ("png", "scores", "coco", "cvat", "fiftyone")
OVERLAP_RULE = ("overlapping masks: the smaller mask is on top (painted largest first; equal areas: "
                "the tag later in alphabetical order on top)")


def voc_color(i: int) -> tuple[int, int, int]:
    """The Pascal VOC colour of label index `i` (0 = black background); distinct for i < 2**24."""
    r = g = b = 0
    c, j = int(i), 0
    while c:
        r |= (c & 1) << (7 - j)
        g |= ((c >> 1) & 1) << (7 - j)
        b |= ((c >> 2) & 1) << (7 - j)
        c >>= 3
        j += 1
    return r, g, b


def cvat_label(tag: str) -> str:
    """labelmap.txt splits its lines on ':' — a tag such as `:d` is written `_colon_d`."""
    return tag.replace(":", "_colon_")


def paint_order(masks: dict[str, np.ndarray]) -> list[str]:
    """The tags of one image in painting order: largest mask first, so the smaller is on top."""
    return sorted(masks, key=lambda t: (-int(masks[t].sum()), t))


def label_map(masks: dict[str, np.ndarray], index_of: dict[str, int], shape) -> np.ndarray:
    """One label index per pixel (0 = none) by the overlap rule."""
    out = np.zeros(shape, dtype=np.int64)
    for tag in paint_order(masks):
        out[masks[tag]] = index_of[tag]
    return out


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    bio = io.BytesIO()
    if arr.dtype == np.uint16:
        Image.fromarray(arr, mode="I;16").save(bio, format="PNG")
    else:
        Image.fromarray(arr).save(bio, format="PNG")
    return bio.getvalue()


def _read_png(path: Path) -> np.ndarray | None:
    from PIL import Image

    if not path.exists():
        return None
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def _posts(run_dir: Path, tag: str | None) -> Iterator[tuple[int, list[dict]]]:
    """(post_id, accepted index rows) of a run, post by post."""
    from .index import PseudoMaskIndex

    index = PseudoMaskIndex(run_dir)
    try:
        rows = index.query(tag=tag or None, accepted=True).to_dict("records")
    finally:
        index.close()
    by_post: dict[int, list[dict]] = {}
    for r in rows:
        by_post.setdefault(int(r["post_id"]), []).append(r)
    yield from sorted(by_post.items())


def export_run(run_dir: Path, ws: Workspace, formats=FORMATS, out_dir: Path | None = None,
               tag: str | None = None) -> dict[str, Any]:
    """Write the accepted masks of a pseudo-mask run (of one tag, if given) in `formats`.
    Returns {"files": {format: path}, "images": n, "annotations": n, "tags": [...]}."""
    run_dir = Path(run_dir)
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise GaudiError(f"unknown export format {', '.join(unknown)}; one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir) if out_dir else run_dir / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run_dir.name + (f"_{cvat_label(tag).replace('/', '_')}" if tag else "")
    posts = list(_posts(run_dir, tag))
    if not posts:
        what = f"tag {tag!r}" if tag else "this run"
        raise GaudiError(f"no accepted masks to export for {what} in {run_dir.name}")
    tags = sorted({str(r["tag"]) for _, rows in posts for r in rows})
    index_of = {t: i + 1 for i, t in enumerate(tags)}  # 0 is the background
    images = manifest_images(ws)

    files: dict[str, Path] = {f: out_dir / f"{name}_{_SUFFIX[f]}" for f in formats}
    zips = {f: zipfile.ZipFile(files[f], "w", compression=zipfile.ZIP_DEFLATED)
            for f in formats if f in ("png", "scores", "cvat", "fiftyone")}
    coco: dict[str, Any] = {"info": {"description": f"GaUDI accepted pseudo-masks, {run_dir.name}"},
                            "images": [], "annotations": [],
                            "categories": [{"id": index_of[t], "name": t, "supercategory": "tag"} for t in tags]}
    names_used: set[str] = set()
    cvat_names: list[str] = []
    n_ann = 0
    try:
        for post_id, rows in posts:
            masks: dict[str, np.ndarray] = {}
            for r in rows:
                m = _read_png(run_dir / r["mask_path"])
                if m is None:
                    continue
                t = str(r["tag"])
                masks[t] = m > 127
                fname = Path(r["mask_path"]).name
                if "png" in zips:
                    zips["png"].writestr(f"{post_id}/{fname}", _png_bytes(masks[t].astype(np.uint8) * 255))
                if "scores" in zips and r.get("score_path"):
                    s = _read_png(run_dir / r["score_path"])
                    if s is not None:
                        zips["scores"].writestr(f"{post_id}/{fname}", _png_bytes(s))
            if not masks:
                continue
            h, w = next(iter(masks.values())).shape
            img = images.get(post_id)
            coco["images"].append({"id": post_id, "width": w, "height": h,
                                   "file_name": ws.rel(img) if img else str(post_id)})
            for t in sorted(masks):
                n_ann += 1
                coco["annotations"].append({
                    "id": n_ann, "image_id": post_id, "category_id": index_of[t],
                    "segmentation": rle.encode(masks[t]), "area": int(masks[t].sum()),
                    "bbox": rle.bbox(masks[t]), "iscrowd": 1})
            # the image's name in CVAT / FiftyOne: its file's stem (what a CVAT task of the same
            # pictures calls it), else the post id
            stem = img.stem if img is not None and img.stem not in names_used else str(post_id)
            names_used.add(stem)
            labels = label_map(masks, index_of, (h, w))
            if "cvat" in zips:
                _cvat_image(zips["cvat"], stem, masks, labels)
                cvat_names.append(stem)
            if "fiftyone" in zips:
                dtype = np.uint8 if len(tags) < 256 else np.uint16
                zips["fiftyone"].writestr(f"labels/{stem}.png", _png_bytes(labels.astype(dtype)))
                if img is not None and img.exists():
                    zips["fiftyone"].write(img, f"data/{stem}{img.suffix.lower()}")
        if "cvat" in zips:
            _cvat_finish(zips["cvat"], tags, cvat_names, run_dir.name)
        if "fiftyone" in zips:
            _fiftyone_finish(zips["fiftyone"], tags, run_dir.name)
    finally:
        for z in zips.values():
            z.close()
    if "coco" in files:
        files["coco"].write_text(json.dumps(coco), encoding="utf-8")
    return {"files": files, "images": len(coco["images"]), "annotations": n_ann, "tags": tags}


_SUFFIX = {"png": "masks.zip", "scores": "scores.zip", "coco": "coco.json", "cvat": "cvat.zip",
           "fiftyone": "fiftyone.zip"}


def _cvat_image(zf: zipfile.ZipFile, stem: str, masks: dict[str, np.ndarray], labels: np.ndarray) -> None:
    """SegmentationClass: each pixel the colour of its tag; SegmentationObject: each tag's visible
    region is one object, coloured by its object number (VOC colours)."""
    lut = np.array([voc_color(0)] + [voc_color(i) for i in range(1, int(labels.max()) + 1)], dtype=np.uint8)
    zf.writestr(f"SegmentationClass/{stem}.png", _png_bytes(lut[labels]))
    objects = np.zeros(labels.shape, dtype=np.int64)
    for k, t in enumerate(paint_order(masks), start=1):
        objects[masks[t]] = k
    olut = np.array([voc_color(i) for i in range(int(objects.max()) + 1)], dtype=np.uint8)
    zf.writestr(f"SegmentationObject/{stem}.png", _png_bytes(olut[objects]))


def _cvat_finish(zf: zipfile.ZipFile, tags: list[str], names: list[str], run: str) -> None:
    lines = ["# label:color_rgb:parts:actions",
             f"# GaUDI pseudo-masks {run}; {OVERLAP_RULE}",
             "background:0,0,0::"]
    lines += [f"{cvat_label(t)}:{','.join(map(str, voc_color(i)))}::" for i, t in enumerate(tags, start=1)]
    zf.writestr("labelmap.txt", "\n".join(lines) + "\n")
    zf.writestr("ImageSets/Segmentation/default.txt", "\n".join(names) + "\n")
    renamed = [f"  {cvat_label(t)} = {t}" for t in tags if cvat_label(t) != t]
    zf.writestr("README.txt", (
        f"GaUDI accepted pseudo-masks of {run} in CVAT's \"Segmentation mask 1.1\" format.\n"
        "Import: CVAT -> task -> Actions -> Upload annotations -> Segmentation mask 1.1 (the task's\n"
        "images must have the names listed in ImageSets/Segmentation/default.txt).\n\n"
        f"One label per pixel: {OVERLAP_RULE}. The whole, overlapping masks are in the PNG zip\n"
        "and the COCO JSON of the same export.\n"
        + ("\nTags renamed for labelmap.txt (it splits lines on ':'):\n" + "\n".join(renamed) + "\n"
           if renamed else "")))


def _fiftyone_finish(zf: zipfile.ZipFile, tags: list[str], run: str) -> None:
    zf.writestr("mask_targets.json", json.dumps({str(i): t for i, t in enumerate(tags, start=1)}, indent=1))
    zf.writestr("README.txt", (
        f"GaUDI accepted pseudo-masks of {run} as a FiftyOne ImageSegmentationDirectory:\n"
        "data/<name>.<ext> the images, labels/<name>.png one tag index per pixel (0 = none),\n"
        "mask_targets.json {index: tag}.\n\n"
        f"One label per pixel: {OVERLAP_RULE}.\n\n"
        "    import json, fiftyone as fo\n"
        "    ds = fo.Dataset.from_dir(dataset_dir=\"DIR\", dataset_type=fo.types.ImageSegmentationDirectory,\n"
        "                             label_field=\"pseudo_masks\")\n"
        "    targets = {int(k): v for k, v in json.load(open(\"DIR/mask_targets.json\")).items()}\n"
        "    ds.mask_targets = {\"pseudo_masks\": targets}\n"
        "    ds.save()\n\n"
        "The overlapping masks: the COCO JSON of the same export, with\n"
        "fo.types.COCODetectionDataset, data_path=WORKSPACE, labels_path=the JSON,\n"
        "label_types=\"segmentations\".\n"))


# ---- readers (round trips, and for users' scripts) ----------------------------------------------

def read_coco(path: Path) -> dict[int, dict[str, np.ndarray]]:
    """{image id: {category name: bool mask}} of a COCO JSON with RLE or polygon-free segmentations."""
    coco = json.loads(Path(path).read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    out: dict[int, dict[str, np.ndarray]] = {int(i["id"]): {} for i in coco["images"]}
    for a in coco["annotations"]:
        seg = a["segmentation"]
        if not isinstance(seg, dict):
            raise GaudiError("read_coco reads RLE segmentations only")
        out.setdefault(int(a["image_id"]), {})[names[a["category_id"]]] = rle.decode(seg)
    return out


def read_cvat(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{image name: {label: bool mask}} of a CVAT "Segmentation mask 1.1" zip (SegmentationClass)."""
    from PIL import Image

    with zipfile.ZipFile(path) as zf:
        colours: dict[tuple[int, int, int], str] = {}
        for line in zf.read("labelmap.txt").decode("utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            label, colour = line.split(":")[:2]
            colours[tuple(int(v) for v in colour.split(","))] = label
        names = [n for n in zf.read("ImageSets/Segmentation/default.txt").decode("utf-8").split() if n]
        out: dict[str, dict[str, np.ndarray]] = {}
        for n in names:
            arr = np.asarray(Image.open(io.BytesIO(zf.read(f"SegmentationClass/{n}.png"))).convert("RGB"))
            flat = arr.reshape(-1, 3)
            seen, inverse = np.unique(flat, axis=0, return_inverse=True)
            inverse = inverse.reshape(arr.shape[:2])
            masks = {}
            for k, c in enumerate(seen):
                label = colours.get(tuple(int(v) for v in c))
                if label is None:
                    raise GaudiError(f"{n}.png has a colour {tuple(c)} that labelmap.txt does not list")
                if label != "background":
                    masks[label] = inverse == k
            out[n] = masks
    return out


def export_post(run_dir: Path, post_id: int, out_path: Path) -> Path:
    """One image's masks of a run in a zip: `masks/<tag>.png` (accepted, binary),
    `rejected/<tag>.png` and `scores/<tag>.png` (soft maps, 0..255 = 0..1)."""
    from .index import PseudoMaskIndex

    run_dir = Path(run_dir)
    index = PseudoMaskIndex(run_dir)
    try:
        rows = index.scores(int(post_id))
    finally:
        index.close()
    if not rows:
        raise GaudiError(f"post {post_id} has no masks in {run_dir.name}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for r in rows:
            for folder, rel in (("masks" if r["accepted"] else "rejected", r["mask_path"]),
                                ("scores", r.get("score_path"))):
                if rel and (run_dir / rel).exists():
                    zf.write(run_dir / rel, f"{folder}/{Path(rel).name}")
    return out_path
