"""`gaudi bench quality` runs the whole pipeline end to end (tiny sizes) and records every row."""
import json


def test_bench_quality_tiny_records_every_row(tmp_path, run_gaudi):
    rc, out, err = run_gaudi(
        "bench", "quality", "--work-dir", str(tmp_path / "bq"), "--n-train", "48", "--n-test", "12",
        "--size", "64", "80", "--model", "gaudi-tiny", "--image-size", "64", "--align-epochs", "12",
        "--seg-epochs", "1", "--batch-size", "16", "--no-ablations", "--out", str(tmp_path / "bench.json"),
        timeout=600)
    assert rc == 0, err
    res = json.loads((tmp_path / "bench.json").read_text())["quality"]
    names = [r["row"] for r in res["rows"]]
    for want in ("CAM only", "pseudo v1", "segmenter s1", "pseudo v2", "segmenter s2", "oracle"):
        assert any(n.startswith(want) for n in names), (want, names)
    assert all(0.0 <= r["miou"] <= 1.0 for r in res["rows"])


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
