"""Exports of a pseudo-mask run (gaudi_engine/pseudo/export.py): the COCO and CVAT files read back
to the same masks (CVAT: one label per pixel, smaller mask on top), the FiftyOne directory has the
layout its ImageSegmentationDirectory importer reads, and soft maps travel beside the masks."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from gaudi_engine.errors import GaudiError
from gaudi_engine.pseudo import export
from gaudi_engine.pseudo.output import INDEX_COLUMNS, merge_index, part_line
from gaudi_engine.tags import tag_filename
from gaudi_engine.workspace import Workspace

H, W = 24, 32


def _masks(post: int) -> dict[str, tuple[np.ndarray, bool]]:
    """Overlapping masks: `1girl` (large) holds `shirt` (small); `sky` beside; one rejected."""
    yy, xx = np.mgrid[:H, :W]
    girl = (xx >= 4 + post) & (xx < 20 + post) & (yy >= 2)
    shirt = (xx >= 8 + post) & (xx < 14 + post) & (yy >= 10) & (yy < 18)
    sky = yy < 6  # overlaps 1girl's top rows, and is larger than it on some posts
    tail = (xx == 0) & (yy < 3)
    return {"1girl": (girl, True), "shirt": (shirt, True), "sky": (sky, True), ":d": (tail, True),
            "grass": (yy > 20, False)}


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture
def run(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.ensure()
    run_dir = ws.runs_dir / "pseudomasks_v1"
    (run_dir / "parts").mkdir(parents=True)
    manifest = ["post_id,image_path,tags"]
    lines = []
    for post in (3, 7):
        img = ws.root / "data" / "images" / f"img{post:04d}.png"
        _png(img, np.full((H, W, 3), 30 * post, np.uint8))
        manifest.append(f"{post},{ws.rel(img)},x")
        rows = []
        for tag, (m, ok) in _masks(post).items():
            name = tag_filename(tag)
            mask_rel = f"{'masks' if ok else 'rejected'}/{post}/{name}"
            _png(run_dir / mask_rel, m.astype(np.uint8) * 255)
            score = np.clip(m * 200 + 30, 0, 255).astype(np.uint8)
            _png(run_dir / f"scores/{post}/{name}", score)
            row = {c: None for c in INDEX_COLUMNS}
            row.update(post_id=post, tag=tag, accepted=ok, reason="", area=float(m.mean()), quality=0.5,
                       parts=1, parts_rejected=0, width=W, height=H, mask_path=mask_rel,
                       score_path=f"scores/{post}/{name}", round=1)
            rows.append(row)
        lines.append(part_line(post, rows))
    (run_dir / "parts" / "shard-0-of-1.jsonl").write_text("".join(lines))
    merge_index(run_dir)
    (ws.root / "data" / "manifest.csv").write_text("\n".join(manifest) + "\n")
    return ws, run_dir


def _accepted(post):
    return {t: m for t, (m, ok) in _masks(post).items() if ok}


def _expected_labels(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The documented rule, pixel by pixel: the smallest mask covering a pixel owns it (equal
    areas: the tag later in alphabetical order)."""
    owner = np.full((H, W), "", dtype=object)
    for y in range(H):
        for x in range(W):
            cover = [t for t, m in masks.items() if m[y, x]]
            if cover:
                owner[y, x] = max(cover, key=lambda t: (-int(masks[t].sum()), t))
    return {t: owner == t for t in masks if (owner == t).any()}


def test_coco_round_trip_gives_the_same_masks(run):
    ws, run_dir = run
    out = export.export_run(run_dir, ws, formats=["coco"])
    back = export.read_coco(out["files"]["coco"])
    assert sorted(back) == [3, 7] and out["annotations"] == 8 and out["images"] == 2
    for post in (3, 7):
        want = _accepted(post)
        assert sorted(back[post]) == sorted(want)
        for t, m in want.items():
            assert np.array_equal(back[post][t], m), (post, t)
    coco = json.loads(out["files"]["coco"].read_text())
    assert {i["file_name"] for i in coco["images"]} == {"data/images/img0003.png", "data/images/img0007.png"}


def test_cvat_round_trip_follows_the_overlap_rule(run):
    ws, run_dir = run
    out = export.export_run(run_dir, ws, formats=["cvat"])
    path = out["files"]["cvat"]
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert {"labelmap.txt", "ImageSets/Segmentation/default.txt", "README.txt",
                "SegmentationClass/img0003.png", "SegmentationObject/img0007.png"} <= names
        labelmap = zf.read("labelmap.txt").decode()
        assert "smaller mask is on top" in labelmap and "smaller mask is on top" in zf.read("README.txt").decode()
        assert "background:0,0,0::" in labelmap.splitlines()
        colours = [ln.split(":")[1] for ln in labelmap.splitlines() if ln and not ln.startswith("#")]
        assert len(set(colours)) == len(colours) == 5  # background + one colour per accepted tag
        assert "_colon_d = :d" in zf.read("README.txt").decode()
        objects = np.asarray(Image.open(io.BytesIO(zf.read("SegmentationObject/img0003.png"))).convert("RGB"))
        assert len(np.unique(objects.reshape(-1, 3), axis=0)) == 5  # 4 objects + background
    back = export.read_cvat(path)
    assert sorted(back) == ["img0003", "img0007"]
    for post in (3, 7):
        want = _expected_labels(_accepted(post))
        got = {t.replace("_colon_", ":"): m for t, m in back[f"img{post:04d}"].items()}
        assert sorted(got) == sorted(want)
        for t in want:
            assert np.array_equal(got[t], want[t]), (post, t)
    # the rule did something: shirt (small) sits on 1girl, so 1girl lost those pixels
    girl = _accepted(3)["1girl"]
    assert back["img0003"]["1girl"].sum() < girl.sum()
    assert np.array_equal(back["img0003"]["shirt"], _accepted(3)["shirt"])


def test_fiftyone_directory_layout(run):
    ws, run_dir = run
    out = export.export_run(run_dir, ws, formats=["fiftyone"])
    with zipfile.ZipFile(out["files"]["fiftyone"]) as zf:
        names = set(zf.namelist())
        assert {"data/img0003.png", "data/img0007.png", "labels/img0003.png", "labels/img0007.png",
                "mask_targets.json", "README.txt"} <= names
        targets = {int(k): v for k, v in json.loads(zf.read("mask_targets.json")).items()}
        assert sorted(targets.values()) == sorted(_accepted(3))
        assert "fo.types.ImageSegmentationDirectory" in zf.read("README.txt").decode()
        labels = np.asarray(Image.open(io.BytesIO(zf.read("labels/img0007.png"))))
    assert labels.ndim == 2 and labels.shape == (H, W)  # one channel: index per pixel
    want = _expected_labels(_accepted(7))
    inverse = {v: k for k, v in targets.items()}
    for t, m in want.items():
        assert np.array_equal(labels == inverse[t], m), t
    assert ((labels == 0) == ~np.logical_or.reduce(list(_accepted(7).values()))).all()


def test_png_and_soft_map_zips_side_by_side(run):
    ws, run_dir = run
    out = export.export_run(run_dir, ws, formats=["png", "scores"], tag="shirt")
    masks = zipfile.ZipFile(out["files"]["png"]).namelist()
    scores = zipfile.ZipFile(out["files"]["scores"])
    assert sorted(masks) == sorted(scores.namelist()) == ["3/shirt.png", "7/shirt.png"]
    soft = np.asarray(Image.open(io.BytesIO(scores.read("3/shirt.png"))))
    assert soft.dtype == np.uint8 and set(np.unique(soft)) == {30, 230}  # the soft map itself


def test_errors_are_one_line_for_the_user(run):
    ws, run_dir = run
    with pytest.raises(GaudiError, match="unknown export format"):
        export.export_run(run_dir, ws, formats=["voc"])
    with pytest.raises(GaudiError, match="no accepted masks"):
        export.export_run(run_dir, ws, formats=["png"], tag="grass")


def test_voc_colours_are_distinct():
    cols = [export.voc_color(i) for i in range(2000)]
    assert cols[0] == (0, 0, 0) and cols[1] == (128, 0, 0) and len(set(cols)) == 2000


def test_cli_writes_the_chosen_formats(run, capsys):
    from gaudi_engine.cli import main

    ws, run_dir = run
    assert main(["--workspace", str(ws.root), "export-pseudomasks", "pseudomasks_v1",
                 "--format", "cvat,coco", "--out", "exports"]) == 0
    out = capsys.readouterr().out
    assert "8 masks of 2 images" in out and "exports/pseudomasks_v1_cvat.zip" in out
    assert sorted(p.name for p in (ws.root / "exports").iterdir()) == ["pseudomasks_v1_coco.json",
                                                                       "pseudomasks_v1_cvat.zip"]
    assert main(["--workspace", str(ws.root), "export-pseudomasks", "runs/nope"]) == 2
    assert "not a pseudo-mask run" in capsys.readouterr().err
