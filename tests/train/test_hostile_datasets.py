"""Stage A and Stage B over a manifest of hostile files (tests/hostile_files.py): each unreadable
picture is skipped with one warning naming it, every good one is trained on, and a short Stage A
run finishes."""
import csv
import logging

import torch

from gaudi_engine.filenames import shown
from tests.hostile_files import write_hostile_folder

PRE = {"image_size": 64}


def hostile_manifest(tmp_path):
    h = write_hostile_folder(tmp_path / "pics ü", nested=True)
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["post_id", "image_path", "tags", "md5", "rating", "width", "height"])
        # a manifest is UTF-8 CSV: a name that is not UTF-8 cannot be in one (export-manifest writes
        # md5-named copies), so that picture is left out here
        for i, rel in enumerate(r for r in h.good + h.bad if shown(r) == r):
            w.writerow([i + 1, (h.root / rel).as_posix(), "sky grass" if i % 2 else "sky 1girl", "", "g", "", ""])
    return h, path


def _skips(caplog, h) -> None:
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "skipping" in r.getMessage()]
    for name in h.bad:
        assert sum(name in line for line in lines) == 1, (name, lines)
    assert all("\n" not in line for line in lines)


def test_stage_a_dataset_skips_each_unreadable_picture_once(tmp_path, caplog):
    from gaudi_engine.imaging import WorkingImageCache
    from gaudi_engine.train.data import TagImageDataset, build_vocab, read_manifest

    h, manifest = hostile_manifest(tmp_path)
    records = read_manifest(manifest)
    with caplog.at_level(logging.WARNING, logger="gaudi_engine"):
        ds = TagImageDataset(records, build_vocab(records), PRE, cache=WorkingImageCache(tmp_path / "cache"))
    assert len(ds) == len([r for r in h.good if shown(r) == r])
    _skips(caplog, h)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape[0] == 3 and torch.isfinite(item["image"]).all()
        assert min(item["image"].shape[-2:]) >= PRE["image_size"]


def test_stage_b_dataset_skips_each_unreadable_picture_once(tmp_path, caplog):
    from gaudi_engine.train.data import build_vocab, read_manifest
    from gaudi_engine.train.segmenter import SegmenterDataset

    h, manifest = hostile_manifest(tmp_path)
    records = read_manifest(manifest)
    with caplog.at_level(logging.WARNING, logger="gaudi_engine"):
        ds = SegmenterDataset(records, {}, build_vocab(records), PRE)
    assert len(ds) == len([r for r in h.good if shown(r) == r])
    _skips(caplog, h)
    for i in range(len(ds)):
        ds[i]


def test_a_short_stage_a_run_over_hostile_files_finishes(tmp_path):
    from gaudi_engine import synth
    from gaudi_engine.train.align import train_align

    _, manifest = hostile_manifest(tmp_path)
    desc = tmp_path / "desc.json"
    desc.write_text(__import__("json").dumps(synth.TAG_DESCRIPTIONS), encoding="utf-8")
    summary = train_align(manifest, desc, tmp_path / "run", model_name="gaudi-tiny", image_size=64, epochs=1,
                          batch_size=4, device="cpu", workspace_root=tmp_path)
    assert (tmp_path / "run" / "checkpoints").is_dir() and summary
