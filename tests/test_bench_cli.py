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
