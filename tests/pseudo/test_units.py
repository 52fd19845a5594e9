"""Unit tests of the pseudo-labeller's parts, with no trained model."""
import json
import numpy as np
import pandas as pd
import pytest
import torch

from gaudi_engine.errors import GaudiError
from gaudi_engine.metrics import IoUAccumulator, mask_iou
from gaudi_engine.pseudo import affinity, regions
from gaudi_engine.pseudo.cam import competitive_softmax, competitor_matrix, cooccurrence, decide_nests, \
    base_scale_area, mutual_pairs, nest_candidates
from gaudi_engine.pseudo.index import PseudoMaskIndex
from gaudi_engine.pseudo.output import INDEX_COLUMNS, parse_shard, shard_records
from gaudi_engine.tags import tag_filename
from gaudi_engine.pseudo.validators import ValidatorConfig, apply_floor, calibrate_floors, mean_pairwise_iou, validate_image


def test_metrics_dataset_level():
    acc = IoUAccumulator()
    a = np.zeros((4, 4), bool)
    a[:2] = True
    acc.add("sky", a, a)
    acc.add("sky", np.zeros((4, 4), bool), a)  # I=8, U=16 in total -> 0.5 (not mean of 1 and 0)
    acc.add("sun", a, ~a)
    assert acc.per_tag() == {"sky": 0.5, "sun": 0.0}
    assert acc.miou() == 0.25
    assert mask_iou(a, a) == 1.0


def test_nesting_competition():
    tags = ["1girl", "dress", "sky"]
    comp = competitor_matrix(tags, "nesting", {("dress", "1girl")})
    assert not comp[0, 1]  # 1girl never fights its dress ...
    assert comp[1, 0]  # ... while the dress still fights 1girl: that keeps it on the dress
    assert comp[1, 2] and comp[2, 0] and not comp[0, 0]
    assert not competitor_matrix(tags, "background", set()).any()
    assert competitor_matrix(tags, "all", set()).sum() == 6
    # a dress pixel: 1girl and dress both high; sky low. Nesting keeps both near 1.
    sim = torch.tensor([0.8, 0.8, 0.0]).view(1, 3, 1, 1)
    bg = torch.tensor([0.0]).view(1, 1, 1, 1)
    p_nest = competitive_softmax(sim, bg, comp, 10.0).flatten()
    p_all = competitive_softmax(sim, bg, competitor_matrix(tags, "all", set()), 10.0).flatten()
    assert p_nest[0] > 0.99  # the girl keeps her dress's pixels
    assert p_nest[1] < 0.51 and p_all[0] < 0.51 and p_all[1] < 0.51


def test_cooccurrence_and_nesting_decision():
    lists = [["1girl", "dress"]] * 5 + [["1girl"]] * 5 + [["ocean", "beach"]] * 5
    co = cooccurrence(lists)
    assert co[("dress", "1girl")] == 1.0 and co[("1girl", "dress")] == 0.5
    # ocean and beach imply each other: a scene type, never tested as part and whole
    assert nest_candidates(lists) == {("dress", "1girl")}
    # share of the child's mask inside the parent's, per image, as measured on SynthBooru: the
    # dress lies inside the girl; a sun beside the sky, a tree on the grass do not
    ev = {("dress", "1girl"): [0.7, 0.56, 0.63], ("sun", "sky"): [0.2, 0.3, 0.1],
          ("tree", "grass"): [0.09] * 4, ("starry_sky", "sky"): [0.9, 0.8]}
    assert decide_nests(ev) == {("dress", "1girl")}  # starry_sky: seen only twice
    assert decide_nests(ev, min_count=2) == {("dress", "1girl"), ("starry_sky", "sky")}
    # a thing in a thing (hat in 1girl) wins its own pixels in the competition: a lower bar
    ev[("hat", "1girl")] = [0.1, 0.5, 0.4]
    assert ("hat", "1girl") not in decide_nests(ev)
    assert decide_nests(ev, things={"hat", "1girl", "dress"}) == {("dress", "1girl"), ("hat", "1girl")}
    assert ("sun", "sky") not in decide_nests(ev, things={"sun"})  # sky is stuff: the full bar


def test_affinity_propagation():
    feats = torch.zeros(1, 4, 8, 8)
    feats[:, 0, :, :4] = 1  # two feature regions: left and right
    feats[:, 1, :, 4:] = 1
    aff = affinity.local_affinity(feats, radius=1, beta=20.0)
    assert torch.allclose(aff.sum(1), torch.ones(1, 64), atol=1e-5)
    cam = torch.zeros(1, 1, 8, 8)
    cam[..., 2, 1] = 1.0  # a seed on the left
    out = affinity.refine(cam, feats, radius=1, beta=20.0, iters=6, dilations=(1,))
    assert out[..., :, :4].sum() > 0.99 * out.sum()  # the mass stays on its own side
    assert (out[..., :, :4] > 0).sum() > 4  # and spreads within it
    flat = affinity.refine(torch.full((1, 2, 8, 8), 0.3), feats)
    assert torch.allclose(flat, torch.full_like(flat, 0.3), atol=1e-5)


def test_regions_follow_edges():
    img = np.zeros((48, 48, 3), np.uint8)
    img[:, :20] = (200, 40, 40)
    img[:, 20:] = (40, 40, 200)
    labels = regions.superpixels(img, "slic")
    score = np.zeros((48, 48), np.float32)
    score[:, :24] = 0.8  # a blurry CAM that leaks 4 px over the true edge at x=20
    mask, smooth, t = regions.regions_mask(score, labels)
    gt = np.zeros((48, 48), bool)
    gt[:, :20] = True
    assert mask_iou(mask, gt) > mask_iou(score > 0.5, gt)
    assert 0.3 <= t <= 0.7
    assert regions.superpixels(img, "felzenszwalb").max() >= 1
    with pytest.raises(ValueError):
        regions.superpixels(img, "nope")


def test_validators_with_fake_classifier():
    # the "classifier" sees the tag iff the left half is still red
    x = torch.zeros(3, 32, 32)
    x[0, :, :16] = 1.0

    def score_fn(batch):
        return batch[:, 0, :, :16].mean((1, 2)).clamp(0, 1).unsqueeze(1)

    good = np.zeros((32, 32), bool)
    good[:, :16] = True
    bad = np.zeros((32, 32), bool)
    bad[:, 16:] = True
    cfg = ValidatorConfig(policy="absolute")
    views = np.stack([good, good])
    r_good = validate_image(x, {"red": good}, {"red": views}, ["red"], score_fn, cfg)["red"]
    r_bad = validate_image(x, {"red": bad}, {"red": np.stack([bad, good])}, ["red"], score_fn, cfg)["red"]
    assert r_good["accepted"], r_good["reason"]
    assert r_good["deletion_drop"] > 0.8 and r_good["insertion_keep"] > 0.8
    assert not r_bad["accepted"]
    assert "deletion-no-drop" in r_bad["reason"] and "unstable" in r_bad["reason"]
    assert mean_pairwise_iou(np.stack([good, bad])) == 0.0
    # relative policy: only hard failures at this point; the tag's calibrated floor decides later
    rel = validate_image(x, {"red": bad}, {"red": np.stack([bad, good])}, ["red"], score_fn, ValidatorConfig())["red"]
    assert rel["accepted"] and rel["deletion_drop"] < 0.15


def test_relative_policy_floors_rank_within_each_tag():
    q = {"sun": [0.01, 0.02, 0.03, 0.04, 0.05], "sky": [0.5, 0.6, 0.7, 0.8, 0.9], "moon": [0.2]}
    cal = calibrate_floors(q, 0.25)
    assert cal["floors"]["sun"] == pytest.approx(0.02) and cal["floors"]["sky"] == pytest.approx(0.6)
    assert "moon" not in cal["floors"] and cal["default"] == pytest.approx(0.02)  # too few: most lenient
    low_sky = {"accepted": True, "reason": "ok", "quality": 0.55}
    apply_floor(low_sky, cal["floors"]["sky"])
    good_sun = {"accepted": True, "reason": "ok", "quality": 0.03}
    apply_floor(good_sun, cal["floors"]["sun"])
    assert (low_sky["accepted"], low_sky["reason"]) == (False, "low-quality") and good_sun["accepted"]


def test_region_level_trims_useless_part():
    x = torch.zeros(3, 32, 32)
    x[0, :10, :10] = 1.0

    def score_fn(batch):
        return batch[:, 0, :10, :10].mean((1, 2)).clamp(0, 1).unsqueeze(1)

    m = np.zeros((32, 32), bool)
    m[:10, :10] = True
    m[20:30, 20:30] = True  # a second part that does not matter to the tag
    r = validate_image(x, {"t": m}, {"t": np.stack([m, m])}, ["t"], score_fn, ValidatorConfig(region_level=True))["t"]
    assert r["parts"] == 2 and r["parts_rejected"] == 1
    assert not r["mask"][25, 25] and r["mask"][5, 5] and r["rejected_mask"][25, 25]
    # off by default (it cut single flowers and clouds out of their masks): the mask stays whole
    r = validate_image(x, {"t": m}, {"t": np.stack([m, m])}, ["t"], score_fn, ValidatorConfig())["t"]
    assert r["parts"] == 0 and r["mask"][25, 25] and r["accepted"]


def test_shards_and_names():
    recs = [{"post_id": i} for i in range(10, 0, -1)]
    parts = [shard_records(recs, (i, 3)) for i in range(3)]
    assert sorted(r["post_id"] for p in parts for r in p) == list(range(1, 11))
    assert [r["post_id"] for r in parts[0]] == [1, 2, 3]
    # sub-shards of shard 1/2 (workers) are exactly shard 1/2
    sub = shard_records(recs, (2, 4)) + shard_records(recs, (3, 4))
    assert sub == shard_records(recs, (1, 2))
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(GaudiError):
            parse_shard(bad)
    assert tag_filename("long_hair") == "long_hair.png"
    assert "/" not in tag_filename("/\\/\\") and tag_filename(":d") != ":d.png"


def test_index_queries(tmp_path):
    rows = []
    for pid in (1, 2, 3):
        for tag, acc, q in (("sky", True, 0.9), ("sun", pid != 2, 0.2 * pid)):
            rows.append({c: None for c in INDEX_COLUMNS} | {"post_id": pid, "tag": tag, "accepted": acc,
                                                               "quality": q, "area": 0.1, "reason": "ok",
                                                               "mask_path": f"masks/{pid}/{tag}.png"})
    pd.DataFrame(rows, columns=INDEX_COLUMNS).to_parquet(tmp_path / "index.parquet")
    idx = PseudoMaskIndex(tmp_path)
    tags = {t["tag"]: t for t in idx.tags()}
    assert tags["sun"]["masks"] == 3 and tags["sun"]["accepted"] == 2
    assert list(idx.query(tag="sun", accepted=True)["post_id"]) == [1, 3]
    assert list(idx.query(score_min=0.5, order="-score")["post_id"]) == [1, 2, 3, 3]
    assert len(idx.scores(2)) == 2
    assert idx.posts(tag="sun", accepted=False) == [2]
    with pytest.raises(GaudiError):
        idx.query(score="nope")
    with pytest.raises(GaudiError):
        PseudoMaskIndex(tmp_path / "missing")


def test_calibrate_masks_zoom_areas_and_containment(tmp_path):
    """SNIP-style zoom: a tag whose median base-scale mask is small is mapped on the enlarged image;
    stuff keeps the base scale; a tag seen fewer than 3 times keeps it too. The same pass measures
    how much of a candidate part's mask lies inside its whole's."""
    from types import SimpleNamespace

    from PIL import Image

    from gaudi_engine.pseudo.calibration import calibrate_masks
    from gaudi_engine.pseudo.config import PseudoConfig
    from gaudi_engine.pseudo.labeler import PseudoLabeler

    records = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (40, 30), (90, 150, 230)).save(p)
        records.append({"post_id": i, "image_path": p, "tags": ["sky", "sun"] + (["moon"] if i < 2 else [])})
    sky, sun, moon = np.zeros((30, 40)), np.zeros((30, 40)), np.zeros((30, 40))
    sky[:20] = 1.0  # 2/3 of the image
    sun[2:6, 30:34] = 1.0  # 1.3 %
    moon[2:6, 2:6] = 1.0
    maps = {"sky": sky, "sun": sun, "moon": moon}
    cfg = PseudoConfig(regions=None)
    labeler = PseudoLabeler(None, {}, None, cfg)
    labeler.score_maps = lambda image, tags: SimpleNamespace(maps=np.stack([maps[t] for t in tags]))
    res = calibrate_masks(labeler, records, cfg, {("sun", "sky"), ("moon", "sky")})
    assert res["zoomed_tags"] == {"sun": 2.0}
    inside = {(r["child"], r["parent"]): r["shares"] for r in res["containment_shares"]}
    assert inside == {("sun", "sky"): [1.0] * 5, ("moon", "sky"): [1.0] * 2}
    assert abs(res["median_area"]["sky"] - 2 / 3) < 1e-6 and res["median_area"]["sun"] < cfg.fine_area
    no_zoom = calibrate_masks(labeler, records, PseudoConfig(regions=None, fine_zoom=None), candidates={("dress", "1girl")})
    assert no_zoom["zoomed_tags"] == {} and no_zoom["median_area"] == res["median_area"]  # nesting still needs the pass
    assert calibrate_masks(labeler, records, PseudoConfig(regions=None, fine_zoom=None)) == \
        {"zoomed_tags": {}, "median_area": {}, "containment_shares": []}


def test_mutual_pairs_are_tags_that_imply_each_other():
    lists = [["ocean", "beach", "sky"]] * 9 + [["ocean", "sky"]] + [["sky", "grass"]] * 5
    # P(beach | ocean) = 9/10, P(ocean | beach) = 9/9: beach is never alone, so it is the specific
    # one; sky is everywhere, but the ocean is not always under it
    assert mutual_pairs(lists) == {("ocean", "beach"): pytest.approx(0.1)}
    assert mutual_pairs(lists, min_cooc=0.95) == {}
    synonyms = [["sea", "ocean"]] * 4 + [["sky"]] * 3
    assert mutual_pairs(synonyms) == {("ocean", "sea"): 0.0}


def test_appearance_split_gives_each_look_to_the_tag_whose_map_prefers_it():
    """Stage A's `ocean` covers water and sand alike and `beach` is a band along the shore: their
    union splits into the blue and the sand-coloured cluster, and each goes to the tag whose map
    prefers it more; the whole union is handed out (the band grows to the sand). One look only,
    or a synonym pair (no gap): nothing to split. The pipeline splits only with fitted looks
    (oriented by the broad tag seen alone): without them it leaves both masks alone."""
    from gaudi_engine.imaging import WorkingImage
    from gaudi_engine.pseudo.config import PseudoConfig
    from gaudi_engine.pseudo.labeler import PseudoLabeler
    from gaudi_engine.pseudo.regions import appearance_split, superpixels

    h, w = 60, 80
    rng = np.random.default_rng(0)
    img = np.zeros((h, w, 3), np.int64)
    img[:30], img[30:] = (40, 90, 180), (230, 210, 150)
    img = np.clip(img + rng.integers(-15, 15, img.shape), 0, 255).astype(np.uint8)
    labels = superpixels(img, "felzenszwalb")
    rows = np.arange(h)[:, None] * np.ones((1, w))
    ocean = np.where(rows < 50, 0.8, 0.6)  # high on the water and most of the sand
    beach = np.exp(-((rows - 30) / 5) ** 2)  # the shoreline band
    union = np.ones((h, w), bool)
    m_ocean, m_beach = appearance_split(img, labels, union, ocean, beach)
    assert m_ocean[:30].all() and not m_ocean[30:].any()
    assert m_beach[30:].all() and not m_beach[:30].any()
    m_beach, m_ocean = appearance_split(img, labels, union, beach, ocean)  # argument order is no cue
    assert m_beach[30:].all() and m_ocean[:30].all()
    flat = np.full((h, w, 3), 120, np.uint8)
    assert appearance_split(flat, superpixels(flat, "felzenszwalb"), union, ocean, beach) is None
    lab = PseudoLabeler(None, {}, None, PseudoConfig(mutual="appearance"))
    masks = {"ocean": union, "beach": (rows > 25) & (rows < 35)}
    raw = {"ocean": ocean, "beach": beach}
    img = WorkingImage(img, (w, h))
    unsure = lab.resolve_mutual(masks, raw, "ocean", "beach", 0.06, img, labels)  # no looks: no split
    assert (unsure[0] == masks["ocean"]).all() and (unsure[1] == masks["beach"]).all()
    lab.looks[("ocean", "beach")] = ({"mean": [38.0, 5.0, -40.0], "var": [100.0] * 3},
                                     {"mean": [84.0, 0.0, 25.0], "var": [100.0] * 3})
    got = lab.resolve_mutual(masks, raw, "ocean", "beach", 0.06, img, labels)
    assert (got[0] == (rows < 30)).all() and (got[1] == (rows >= 30)).all()
    same = lab.resolve_mutual(masks, raw, "ocean", "beach", 0.0, img, labels)  # synonyms
    assert (same[0] == masks["ocean"]).all() and (same[1] == masks["beach"]).all()


def test_fit_looks_learns_each_tags_colour_and_overrules_a_wrong_map():
    """Most images' maps say the blue cluster is `ocean`; the looks fitted from them (one flipped
    image among them) then give the blue cluster to `ocean` even where that image's map prefers the
    sand (a thin night sea)."""
    from gaudi_engine.pseudo.regions import appearance_split, fit_looks, look_llr, superpixels

    rng = np.random.default_rng(1)
    water, sand = np.array([45.0, 0.0, -35.0]), np.array([80.0, 2.0, 30.0])
    samples = []
    for i in range(12):
        c = np.stack([water + rng.normal(0, 4, 3), sand + rng.normal(0, 4, 3)])
        samples.append((c, -0.2 if i == 3 else 0.3))  # cluster 0 is water; image 3's maps disagree
    assert fit_looks(samples[:3]) is None  # too few images to learn a look from
    ocean_look, beach_look = fit_looks(samples)
    assert np.allclose(ocean_look["mean"], water, atol=4) and np.allclose(beach_look["mean"], sand, atol=4)
    assert look_llr(ocean_look, beach_look, samples[3][0]) > 0 > look_llr(beach_look, ocean_look, samples[3][0])
    h, w = 40, 40
    img = np.zeros((h, w, 3), np.uint8)
    img[:20], img[20:] = (30, 60, 140), (200, 190, 120)  # a dark sea over sand
    labels = superpixels(img, "felzenszwalb")
    rows = np.arange(h)[:, None] * np.ones((1, w))
    ocean = np.where(rows < 20, 0.3, 0.9)  # this image's ocean map sits on the sand
    beach = np.full((h, w), 0.5)
    union = np.ones((h, w), bool)
    by_map = appearance_split(img, labels, union, ocean, beach)
    assert by_map[0][20:].all()  # the map alone gives the sand to ocean
    m_ocean, m_beach = appearance_split(img, labels, union, ocean, beach, (ocean_look, beach_look))
    assert m_ocean[:20].all() and not m_ocean[20:].any() and m_beach[20:].all()


def test_fit_looks_anchored_on_the_broad_tag_alone_survives_maps_wrong_in_most_images():
    """When the maps are wrong in most images (a Stage A run whose `ocean` map sits on the sand),
    the looks fitted from them come out swapped; the look of `ocean` in the posts without `beach`
    (`solo_look` of their `mean_lab`) orients them right."""
    from gaudi_engine.pseudo.regions import fit_looks, mean_lab, solo_look

    rng = np.random.default_rng(2)
    water, sand = np.array([45.0, 0.0, -35.0]), np.array([80.0, 2.0, 30.0])
    samples = [(np.stack([water + rng.normal(0, 4, 3), sand + rng.normal(0, 4, 3)]), -0.3 if i < 9 else 0.3)
               for i in range(12)]  # cluster 0 is water, but 9 of 12 maps prefer the sand for ocean
    swapped = fit_looks(samples)
    assert np.allclose(swapped[0]["mean"], sand, atol=4)  # the maps alone: ocean gets the sand's look
    img = np.zeros((10, 10, 3), np.uint8)
    img[:] = (40, 90, 180)
    lone = mean_lab(img, np.ones((10, 10), bool))
    assert mean_lab(img, np.zeros((10, 10), bool)) is None and lone[2] < -20  # blue: b* negative
    assert solo_look([lone]) is None  # one post is no look
    anchor = solo_look([lone, lone + 3])
    ocean_look, beach_look = fit_looks(samples, anchor=anchor)
    assert np.allclose(ocean_look["mean"], water, atol=4) and np.allclose(beach_look["mean"], sand, atol=4)


def test_text_cam_zoom_maps_a_tag_on_the_enlarged_image():
    """Tag k with zoom 2 gets exactly the maps of the 2x image (competition among all tags there);
    zoom 1 everywhere is the plain text-CAM."""
    from gaudi_engine.models.registry import create_align_model
    from gaudi_engine.pseudo.cam import CamConfig, text_cam

    torch.manual_seed(0)
    model = create_align_model("gaudi-tiny", pretrained="none", image_size=64).eval()
    x = torch.randn(3, 64, 64)
    text = torch.nn.functional.normalize(torch.randn(2, model.embed_dim), dim=-1)
    cfg = CamConfig()
    plain = text_cam(model, x, text, ["a", "b"], cfg)
    same = text_cam(model, x, text, ["a", "b"], cfg, zoom=[1.0, 1.0])
    assert torch.equal(plain.views, same.views) and torch.equal(plain.feats, same.feats)
    mixed = text_cam(model, x, text, ["a", "b"], cfg, zoom=[1.0, 2.0])
    big = torch.nn.functional.interpolate(x[None], size=(128, 128), mode="bilinear", align_corners=False)[0]
    enlarged = text_cam(model, big, text, ["a", "b"], cfg)
    assert mixed.views.shape == enlarged.views.shape  # the grid of the largest zoom
    assert torch.allclose(mixed.views[:, 1], enlarged.views[:, 1], atol=1e-6)
    assert not torch.allclose(mixed.views[:, 0], enlarged.views[:, 0], atol=1e-3)
    assert set(mixed.zoom_feats) == {1.0, 2.0} and torch.equal(mixed.feats, mixed.zoom_feats[1.0])
    # a zoomed part (b) of a whole (a) keeps its zoom while the whole's base-scale area times the
    # part's typical share of it stays small, and takes the base scale when it does not
    area = float(base_scale_area(plain.probs)[0])
    assert 0 < area <= 1
    small = text_cam(model, x, text, ["a", "b"], cfg, zoom=[1.0, 2.0], part_area=[(-1, 0.0), (0, 0.01)],
                     zoom_max_area=area * 0.5)
    assert small.zoom.tolist() == [1.0, 2.0] and torch.allclose(small.views, mixed.views)
    large = text_cam(model, x, text, ["a", "b"], cfg, zoom=[1.0, 2.0], part_area=[(-1, 0.0), (0, 1.0)],
                     zoom_max_area=area * 0.5)
    assert large.zoom.tolist() == [1.0, 1.0]
    b_base = text_cam(model, x, text, ["a", "b"], cfg, zoom=[2.0, 1.0])  # b at base scale, same grid
    assert torch.allclose(large.views[:, 1], b_base.views[:, 1], atol=1e-6)


def test_base_scale_area():
    p = torch.zeros(2, 10, 10)
    p[0, :5] = 0.9  # half the grid at its peak
    p[1, 0, 0] = 0.2  # a faint speck: half of the floored peak (0.6) is 0.3
    assert base_scale_area(p).tolist() == [0.5, 0.0]


def test_round_two_reads_the_segmenter_alone():
    """Round 2: the maps are the round-1 segmenter's probabilities at the working size, no CAM
    pass is made, masks are probability >= 0.5, and the consistency views are the segmenter's on
    the plain and flipped image."""
    from PIL import Image

    from gaudi_engine.imaging import WorkingImage

    from gaudi_engine.pseudo.config import PseudoConfig
    from gaudi_engine.pseudo.labeler import PseudoLabeler

    class Seg(torch.nn.Module):
        def probabilities(self, x, text, size):  # tag k: left half k=0, right half k=1 (0.8 vs 0.2)
            h, w = size
            out = torch.full((x.shape[0], text.shape[0], h, w), 0.2)
            out[:, 0, :, : w // 2] = 0.8
            out[:, 1, :, w // 2:] = 0.8
            return out

    class Texts:
        def get(self, tags):
            return torch.zeros(len(tags), 4)

    def no_cam(*a, **k):
        raise AssertionError("round 2 made a CAM pass")

    lab = PseudoLabeler(no_cam, {"image_size": 32}, Texts(), PseudoConfig(regions=None), segmenter=Seg())
    import gaudi_engine.pseudo.labeler as pl
    saved, pl.text_cam = pl.text_cam, no_cam
    try:
        image = WorkingImage(np.asarray(Image.new("RGB", (40, 30), (10, 20, 30))), (400, 300))
        sm = lab.score_maps(image, ["a", "b"])
        masks = [m for m, _, _ in lab.region_masks(image, sm.maps)]
    finally:
        pl.text_cam = saved
    assert sm.maps.shape == (2, 30, 40) and np.allclose(sm.peaks, 1.0)
    assert masks[0][:, :20].all() and not masks[0][:, 20:].any() and masks[1][:, 20:].all()
    assert sm.views.shape[:2] == (2, 2)  # (plain, flipped) x tags


def test_round_two_takes_the_regions_infer_takes(monkeypatch):
    """The CAM is blurrier than a segmenter: round 1 averages it in regions twice `infer`'s
    felzenszwalb scale, round 2 (the segmenter alone) in `infer`'s own."""
    from PIL import Image

    import gaudi_engine.pseudo.labeler as pl
    from gaudi_engine.imaging import WorkingImage
    from gaudi_engine.pseudo.config import PseudoConfig
    from gaudi_engine.pseudo.labeler import PseudoLabeler

    seen = []
    monkeypatch.setattr(pl, "superpixels", lambda image, method, coarse=1.0: seen.append(coarse) or np.zeros(image.shape[:2], int))
    image = WorkingImage(np.zeros((16, 16, 3), np.uint8), (16, 16))
    cfg = PseudoConfig()
    PseudoLabeler(None, {}, None, cfg).superpixels(image)
    PseudoLabeler(None, {}, None, cfg, segmenter=object()).superpixels(image)
    assert seen == [cfg.region_coarse, cfg.seg_region_coarse] and cfg.region_coarse != cfg.seg_region_coarse


def test_nesting_joins_parts_and_cuts_occluders():
    """A part (dress in 1girl) joins its whole's mask; an occluder (a cloud nested in the sky by
    its halo, but no part of it) is cut out of the whole's."""
    from gaudi_engine.pseudo.labeler import apply_nesting

    m = {t: np.zeros((4, 4), bool) for t in ("1girl", "dress", "sky", "cloud", "sun")}
    m["1girl"][:2] = True
    m["dress"][2:3] = True
    m["sky"][:] = True
    m["cloud"][0, :2] = True
    out = apply_nesting(m, {("dress", "1girl"), ("cloud", "sky"), ("moon", "sky")}, occluders={("cloud", "sky")})
    assert out["1girl"][:3].all() and not out["1girl"][3].any()
    assert not out["sky"][0, :2].any() and out["sky"].sum() == 14
    assert out["cloud"].sum() == 2 and out["sun"].sum() == 0 and m["sky"].all()  # inputs untouched
    assert apply_nesting(m, {("cloud", "sky")})["sky"].all()  # no occluders: the old union


def test_occluders_are_things_nested_in_stuff():
    """COCO's panoptic convention: a thing nested in stuff (a tag whose masks span the image)
    stands in front of it; a part of a thing (dress in 1girl) and a kind of stuff (starry_sky in
    sky) join."""
    from gaudi_engine.pseudo.labeler import occluder_nests

    nests = {("cloud", "sky"), ("starry_sky", "sky"), ("tree", "grass"), ("dress", "1girl")}
    assert occluder_nests(nests, {"sky", "starry_sky", "grass"}) == {("cloud", "sky"), ("tree", "grass")}
    assert occluder_nests(nests, set()) == set()  # nothing is stuff


def test_round_two_inherits_round_ones_structure(tmp_path):
    """Round 2 copies round 1's structure.json from the run its segmenter was trained on (not
    calibration.json: the validator floors are per round); a round 1 made before structure.json
    gives its zoom.json / nesting.json; an oracle segmenter, or a round-1 folder that is gone,
    leaves the structure to be measured anew."""
    from gaudi_engine.pseudo.structure import inherit_structure

    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir(), v2.mkdir()
    (v1 / "structure.json").write_text('{"zoomed_tags": {"hat": 2.0}, "nests": [["dress", "1girl"]]}')
    (v1 / "calibration.json").write_text("{}")
    assert inherit_structure({"extra": {"pseudomasks": str(v1)}}, v2) == ["structure.json"]
    assert (v2 / "structure.json").read_text() == (v1 / "structure.json").read_text()
    assert not (v2 / "calibration.json").exists()
    (v1 / "structure.json").write_text('{"nests": []}')  # a rerun keeps what round 2 already used
    assert inherit_structure({"extra": {"pseudomasks": str(v1)}}, v2) == []
    assert "dress" in (v2 / "structure.json").read_text()
    old, v2o = tmp_path / "old", tmp_path / "v2o"
    old.mkdir(), v2o.mkdir()
    (old / "zoom.json").write_text('{"tags": {"hat": 2.0}}')
    (old / "nesting.json").write_text('{"pairs": [["dress", "1girl"]]}')
    assert inherit_structure({"extra": {"pseudomasks": str(old)}}, v2o) == ["zoom.json", "nesting.json"]
    fresh = tmp_path / "v2b"
    fresh.mkdir()
    assert inherit_structure({"extra": {"pseudomasks": None}}, fresh) == []
    assert inherit_structure({"extra": {"pseudomasks": str(tmp_path / "gone")}}, fresh) == []
    assert inherit_structure({}, fresh) == [] and not any(fresh.iterdir())


MEASURED = {"zoomed_tags": {"hat": 2.0, "cloud": 2.0}, "median_area": {"sky": 0.6, "1girl": 0.3, "hat": 0.02, "cloud": 0.03},
            "median_span": {"sky": 1.0, "1girl": 0.5, "hat": 0.1, "cloud": 0.2},
            "containment_shares": [{"child": "hat", "parent": "1girl", "shares": [0.8, 0.9, 0.85]},
                                   {"child": "cloud", "parent": "sky", "shares": [0.6, 0.5, 0.55]}],
            "looks": []}


def test_structure_json_says_what_it_holds(tmp_path):
    """One structure.json per run: the measurements and the decisions made from them (stuff,
    nests, parts, occluders), under names that say what they are; written once, then read back
    by every shard and rerun without measuring again."""
    from gaudi_engine.pseudo.config import PseudoConfig
    from gaudi_engine.pseudo.structure import run_structure

    cfg = PseudoConfig()
    calls = []
    s = run_structure(tmp_path, lambda: calls.append(1) or MEASURED, cfg, {("ocean", "beach"): 0.1})
    assert set(s) == {"zoomed_tags", "median_area", "median_span", "stuff_tags", "containment_shares", "nests",
                      "parts", "occluders", "mutual_pairs", "looks"}
    assert s["stuff_tags"] == ["sky"] and s["nests"] == [["cloud", "sky"], ["hat", "1girl"]]
    assert s["parts"] == {"hat": "1girl"} and s["occluders"] == [["cloud", "sky"]]
    assert s["mutual_pairs"] == [["ocean", "beach", 0.1]]
    assert json.loads((tmp_path / "structure.json").read_text()) == s
    again = run_structure(tmp_path, lambda: calls.append(1) or MEASURED, cfg, {})
    assert again == s and calls == [1]
    joined = run_structure(tmp_path / "join", lambda: MEASURED, PseudoConfig(cut_occluders=False, part_inside=None), {})
    assert joined["occluders"] == [] and joined["parts"] == {}


def test_old_runs_zoom_and_nesting_json_still_read(tmp_path):
    """A run made before structure.json: its zoom.json (zoomed tags, areas, spans, "inside"
    shares, looks) and nesting.json (the pairs) stand in for the measurement, nothing is measured,
    and the labeller gets the same structure as from the new file."""
    from gaudi_engine.pseudo.config import PseudoConfig
    from gaudi_engine.pseudo.labeler import PseudoLabeler
    from gaudi_engine.pseudo.structure import apply_structure, run_structure

    old = {"tags": MEASURED["zoomed_tags"], "median_area": MEASURED["median_area"],
           "median_span": MEASURED["median_span"], "fine_zoom": 2.0, "fine_area": 0.12,
           "inside": MEASURED["containment_shares"], "looks": []}
    (tmp_path / "zoom.json").write_text(json.dumps(old))
    (tmp_path / "nesting.json").write_text(json.dumps({"pairs": [["hat", "1girl"]]}))  # as that run decided

    def measure():
        raise AssertionError("an old run's structure was measured again")

    cfg = PseudoConfig()
    s = run_structure(tmp_path, measure, cfg, {})
    assert s["nests"] == [["hat", "1girl"]] and s["occluders"] == [] and s["parts"] == {"hat": "1girl"}
    assert s["zoomed_tags"] == {"hat": 2.0, "cloud": 2.0} and s["stuff_tags"] == ["sky"]
    lab = PseudoLabeler(None, {}, None, cfg)
    apply_structure(lab, s)
    assert lab.nests == {("hat", "1girl")} and lab.zoom == {"hat": 2.0, "cloud": 2.0} and lab.stuff == {"sky"}
    assert lab.parts == {"hat": "1girl"} and lab.median_area["sky"] == 0.6
    (tmp_path / "nesting.json").unlink()
    (tmp_path / "structure.json").unlink()
    assert run_structure(tmp_path, measure, cfg, {})["nests"] == [["cloud", "sky"], ["hat", "1girl"]]


def test_reassign_by_colour_moves_the_horizon_band_to_the_tag_whose_colour_it_has():
    """A CAM blurs across the horizon: the sky's mask takes the sea's top band. Each region that
    two stuff maps claim goes to the tag whose colour (in this image) fits it: the band returns to
    the sea. A kind of the sky (starry_sky) never takes pixels from it; an unclaimed region and
    a tag not in `tags` are left alone."""
    from gaudi_engine.pseudo.regions import reassign_by_colour, superpixels

    h, w = 60, 60
    rng = np.random.default_rng(0)
    img = np.zeros((h, w, 3), np.int64)
    img[:30] = (150, 190, 240)  # light sky
    img[30:] = (20, 60, 110)  # dark sea
    img[34:36] = img[40:42] = (35, 80, 130)  # wave stripes
    img = np.clip(img + rng.integers(-6, 6, img.shape), 0, 255).astype(np.uint8)
    labels = superpixels(img, "felzenszwalb")
    rows = np.arange(h)[:, None] * np.ones((1, w))
    sky_map = np.clip((45 - rows) / 20, 0, 1)  # reaches well into the sea
    sea_map = np.clip((rows - 25) / 10, 0, 1)
    masks = {"sky": rows < 40, "ocean": rows >= 40, "1girl": np.zeros((h, w), bool)}
    maps = {"sky": sky_map, "ocean": sea_map, "1girl": np.zeros((h, w))}
    out = reassign_by_colour(img, labels, masks, maps, ["sky", "ocean"])
    assert (out["sky"] == (rows < 30)).all() and (out["ocean"] == (rows >= 30)).all()
    assert out["1girl"] is masks["1girl"] and masks["sky"][35].all()  # inputs untouched
    kinds = reassign_by_colour(img, labels, masks, maps, ["sky", "ocean"], related={("ocean", "sky")})
    assert (kinds["sky"] == masks["sky"]).all()  # nested: no region changes hands
    assert reassign_by_colour(img, labels, masks, maps, ["sky"])["sky"] is masks["sky"]  # one tag: nothing to do
