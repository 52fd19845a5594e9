"""SynthBooru: determinism, layout on disk, tag co-occurrence, occlusion-respecting nested masks."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from gaudi_engine import synth

NESTED = {"long_hair": "1girl", "dress": "1girl", "hat": "1girl", "starry_sky": "sky"}


@pytest.fixture(scope="module")
def scenes():
    return [synth.render_scene(i, (96 + i % 40, 128 - i % 30)) for i in range(250)]


def test_deterministic_by_seed():
    a, b, c = synth.render_scene(7, 120), synth.render_scene(7, 120), synth.render_scene(8, 120)
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0])) and a[1] == b[1]
    assert all(np.array_equal(a[2][t], b[2][t]) for t in a[1])
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))


def test_vocabulary_and_descriptions():
    assert len(synth.SYNTH_TAGS) >= 15
    assert set(synth.TAG_DESCRIPTIONS) == set(synth.SYNTH_TAGS)
    for tag, descs in synth.TAG_DESCRIPTIONS.items():
        assert 2 <= len(descs) <= 4 and all(len(d.split()) >= 5 for d in descs), tag


def test_masks_are_visible_pixels_and_nest(scenes):
    seen = set()
    for img, tags, masks in scenes:
        w, h = img.size
        assert list(masks) == tags and tags, "every scene has tags, masks in tag order"
        for t in tags:
            m = masks[t]
            assert m.shape == (h, w) and m.dtype == bool and m.sum() >= 12
            seen.add(t)
            if t in NESTED:  # nested clothing/hair lies inside its owner's mask
                assert NESTED[t] in tags and not (m & ~masks[NESTED[t]]).any(), t
        # tags not nested in one another never share a pixel: occlusion leaves one owner
        for i, a in enumerate(tags):
            for b in tags[i + 1:]:
                if NESTED.get(a) == b or NESTED.get(b) == a:
                    continue
                assert not (masks[a] & masks[b]).any(), (a, b)
    assert seen == set(synth.SYNTH_TAGS), "every tag shows up in 250 scenes"


def test_co_occurrence(scenes):
    tagsets = [set(t) for _, t, _ in scenes]
    ocean = [s for s in tagsets if "ocean" in s]
    assert len(ocean) > 20 and sum("beach" in s for s in ocean) / len(ocean) >= 0.85
    assert all("sky" in s for s in tagsets if "sun" in s or "moon" in s or "cloud" in s)
    assert all("1girl" in s for s in tagsets if s & {"dress", "hat", "long_hair"})
    assert not any({"grass", "ocean"} <= s for s in tagsets)


def test_colour_alone_does_not_name_sky(scenes):
    """Skies are blue by day, orange/pink at sunset, dark at night."""
    kinds = set()
    for img, tags, masks in scenes:
        if "sky" in tags:
            r, g, b = np.asarray(img)[masks["sky"]].mean(0)
            kinds.add("dark" if max(r, g, b) < 90 else "blue" if b > r else "warm")
    assert kinds == {"dark", "blue", "warm"}


def test_generate_layout(tmp_path):
    info = synth.generate(tmp_path, 12, seed=3, size=(64, 96), split="train")
    rows = list(csv.DictReader(open(tmp_path / "manifest.csv")))
    assert [r["post_id"] for r in rows] == [str(i + 1) for i in range(12)]
    assert set(rows[0]) >= {"post_id", "image_path", "tags", "md5", "rating", "width", "height"}
    descs = json.loads((tmp_path / "tag_descriptions.json").read_text())
    assert descs == synth.TAG_DESCRIPTIONS
    for r in rows:
        img_path = tmp_path / r["image_path"]
        name = img_path.stem
        assert name.startswith("train_")
        with Image.open(img_path) as im:
            assert im.size == (int(r["width"]), int(r["height"])) and 64 <= im.width <= 96
        side = [t.strip() for t in img_path.with_suffix(".txt").read_text().split(",")]
        assert side == r["tags"].split()
        for t in side:
            gt = np.asarray(Image.open(tmp_path / "gt" / name / f"{t}.png"))
            assert gt.shape == (im.height, im.width) and set(np.unique(gt)) <= {0, 255} and gt.max() == 255
    assert sum(info["tag_counts"].values()) == sum(len(r["tags"].split()) for r in rows)
    # another split draws other scenes; the same split and seed redraws the same ones
    synth.generate(tmp_path / "test", 3, seed=3, size=(64, 96), split="test")
    synth.generate(tmp_path / "again", 3, seed=3, size=(64, 96), split="train")
    a = (tmp_path / "images" / "train_000000.png").read_bytes()
    assert (tmp_path / "again" / "images" / "train_000000.png").read_bytes() == a
    assert (tmp_path / "test" / "images" / "test_000000.png").read_bytes() != a
