"""The ingest benchmarks run end to end at tiny sizes and report consistent numbers."""
from __future__ import annotations

from gaudi_engine.bench.ingest import bench_catalogue_scale, bench_ingest


def test_bench_ingest_small():
    r = bench_ingest(n_posts=300, page_size=100, tags_per_post=10)
    assert r["post_tags"] == 300 * 10
    assert r["http_requests"] == 4  # 3 pages + the empty one that ends the sync
    for key in ("http_posts_per_s", "parse_upsert_posts_per_s", "parse_posts_per_s", "upsert_posts_per_s"):
        assert r[key] > 0
    assert r["parse_upsert_posts_per_s"] <= min(r["parse_posts_per_s"], r["upsert_posts_per_s"])


def test_bench_catalogue_scale_small():
    r = bench_catalogue_scale(n_posts=3000, tags_per_post=8, chunk=1000, vocab=500)
    assert r["post_tags"] == 3000 * 8  # distinct tags per post, exactly tags_per_post each
    assert r["tag_page48_common_posts"] >= r["tag_page48_median_posts"] >= r["tag_page48_rare_posts"] >= 1
    assert r["ingest_seconds"] > 0 and r["tag_page48_rare_ms"] >= 0
