"""`gaudi bench quality` runs the whole pipeline end to end (tiny sizes) and records every row."""
import json


def _folder_dataset(root, n_train=48, n_test=12, with_gt=30):
    """A dataset folder in ccp-dev's layout made of SynthBooru scenes: masks for only the first
    `with_gt` train images, tag files beside the images."""
    import shutil

    from gaudi_engine import synth

    synth.generate(root / "train", n_train, seed=3, size=(64, 80), split="train")
    synth.generate(root / "test", n_test, seed=3, size=(64, 80), split="test")
    for d in sorted((root / "train" / "gt").iterdir())[with_gt:]:
        shutil.rmtree(d)
    (root / "train" / "tag_descriptions.json").rename(root / "tag_descriptions.json")
    return root


def test_folder_dataset_manifests(tmp_path):
    """A dataset folder becomes train/test manifests (images read in place, md5 of each), a
    seeded train sample, and the oracle's manifest: the sampled train images that have masks."""
    from gaudi_engine.bench.datasets import folder_data
    from gaudi_engine.errors import GaudiError
    from gaudi_engine.train.data import read_manifest

    import pytest

    ds = _folder_dataset(tmp_path / "ds", n_train=20, n_test=4, with_gt=8)
    data = folder_data(ds, tmp_path / "w", train_limit=10, seed=1)
    train, test = read_manifest(data.train_manifest), read_manifest(data.test_manifest)
    assert len(train) == 10 and len(test) == 4 and data.descriptions == ds / "tag_descriptions.json"
    assert all(r["image_path"].parent == ds / "train" / "images" and len(r["md5"]) == 32 for r in train)
    assert {r["post_id"] for r in train}.isdisjoint(r["post_id"] for r in test)
    oracle = read_manifest(data.oracle_manifest)
    by_id = {r["post_id"]: r["image_path"] for r in train}
    assert oracle and all(by_id[r["post_id"]] == r["image_path"] for r in oracle)  # same ids as train
    assert {r["image_path"].stem for r in oracle} == {r["image_path"].stem for r in train} & \
        {d.name for d in (ds / "train" / "gt").iterdir()}
    again = read_manifest(folder_data(ds, tmp_path / "w2", train_limit=10, seed=1).train_manifest)
    assert [r["image_path"] for r in again] == [r["image_path"] for r in train]  # seeded
    with pytest.raises(GaudiError, match="test/gt"):
        folder_data(tmp_path / "w", tmp_path / "w3")


def test_bench_quality_on_a_dataset_folder_records_every_row(tmp_path, run_gaudi):
    # 24 of 32 train images in batches of 8: Stage A still takes 36 steps (pseudo v1 accepts ~88 of
    # ~144 masks, which the segmenter rows need) on fewer pixels
    ds = _folder_dataset(tmp_path / "ds", n_train=32)
    rc, out, err = run_gaudi(
        "bench", "quality", "--dataset", str(ds), "--train-limit", "24", "--work-dir", str(tmp_path / "bq"),
        "--model", "gaudi-tiny", "--image-size", "64", "--align-epochs", "12",
        "--seg-epochs", "1", "--batch-size", "8", "--no-ablations", "--out", str(tmp_path / "bench.json"),
        timeout=600)
    assert rc == 0, err
    res = json.loads((tmp_path / "bench.json").read_text())["quality"]
    names = [r["row"] for r in res["rows"]]
    for want in ("CAM only", "pseudo v1", "segmenter s1", "pseudo v2", "segmenter s2", "oracle"):
        assert any(n.startswith(want) for n in names), (want, names)
    assert all(0.0 <= r["miou"] <= 1.0 for r in res["rows"])
    assert res["dataset"] == "ds" and res["config"]["n_train"] == 24 and res["config"]["n_test"] == 12
    assert res["per_tag"]["s2"] and res["validators"]["best_validator"]
    assert "| tag | cam | v1 | s1 | s2 | oracle |" in out


def test_bench_without_kind_is_a_usage_error(run_gaudi):
    rc, out, err = run_gaudi("bench")
    assert rc == 2


SPEED_MEASUREMENTS = {
    "infer_cold": ("cold_infer_s", "imports_s"),
    "infer": ("checkpoint_load_s", "predict_mid_1_s", "predict_mid_10_s", "predict_big_1_s", "predict_big_10_s",
              "ratio_10_vs_1_tag_mid", "ratio_10_vs_1_tag_big", "ratio_big_vs_mid_10_tags"),
    "infer_batch": ("per_image_small_s", "per_image_big_s", "ratio_big_vs_small"),
    "pseudo": ("images_per_s_small", "images_per_s_big", "ratio_big_vs_small_per_image"),
    "train": ("dataset_build_cold_s", "dataset_build_warm_s", "loop_step_s", "bare_fwd_bwd_s", "median_loop_step_s",
              "median_bare_fwd_bwd_s", "ratio", "ratio_with_warm_load"),
}


def test_bench_speed_tiny_records_every_model_measurement(tmp_path, run_gaudi):
    """The model side of `gaudi bench speed` at tiny sizes: every measurement, its table row,
    the load average around it and the thread count are recorded."""
    out = tmp_path / "bench.json"
    rc, stdout, err = run_gaudi(
        "bench", "speed", "--only", ",".join(SPEED_MEASUREMENTS), "--model", "gaudi-tiny", "--image-size", "64",
        "--big", "192", "288", "--mid", "96", "144", "--small", "64", "96", "--train-side", "192",
        "--repeats", "1", "--cold-repeats", "1", "--batch-images", "2", "--batch-rounds", "1", "--pseudo-images", "2",
        "--train-images", "8", "--train-steps", "2", "--batch-size", "4", "--threads", "1", "--out", str(out),
        timeout=300)
    assert rc == 0, err
    res = json.loads(out.read_text())["speed"]
    for part, keys in SPEED_MEASUREMENTS.items():
        got = res[part]
        for k in keys:
            assert isinstance(got[k], (int, float)) and got[k] > 0, (part, k, got.get(k))
        assert got["threads"] == 1 and "load_avg_start" in got and "load_avg_end" in got
        assert got["rows"] and part in stdout
    assert res["infer"]["image_passed_as"].startswith("path")
    assert res["infer"]["sizes"] == {"mid": "96x144", "big": "192x288"}
    assert len(res["infer"]["tags"]) == 10
    targets = {r["what"]: r["target"] for part in SPEED_MEASUREMENTS for r in res[part]["rows"] if "target" in r}
    assert sorted(targets.values()) == [1.3, 1.3, 1.3, 1.3, 1.5, 1.5, 3.0], targets
    assert res["context"]["threads"] == 1 and res["context"]["load_avg_end"] is not None
    assert "MISSED" in stdout or "ok" in stdout  # the table states each target's outcome


def test_bench_speed_rejects_an_unknown_part(run_gaudi):
    rc, out, err = run_gaudi("bench", "speed", "--only", "infer,warp")
    assert rc == 2 and "warp" in err
