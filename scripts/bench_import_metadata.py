"""Benchmark `gaudi import-metadata` (and `export-catalogue --parquet`) on a generated dump.

    python scripts/bench_import_metadata.py --posts 1000000 --shards 10 [--workers N]
        [--format jsonl|parquet] [--export] [--keep DIR] [--out bench_import.json]

The dump: Danbooru /posts.json objects with every top-level field the API returns (no
`media_asset`; ~2.2 KB a line), ~30 general tags per post drawn from a 50k-tag vocabulary with
a skewed (power-law-like) frequency, plus artist/character/copyright/meta tags that must NOT
reach post_tags; 3 % deleted, 1 % banned (no md5/URLs), 0.5 % mp4. The import is timed end to
end as the command runs it (workers started, tag index rebuilt, final CHECKPOINT), then checked:
every post once, post_tags = the general tags. The load average is printed before and after,
and the CPU seconds of this process and of the parsing workers: on a shared machine the wall
time says as much about the neighbours as about the import.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gaudi_engine.booru.dump_import import import_metadata  # noqa: E402
from gaudi_engine.catalogue.db import Catalogue  # noqa: E402

VOCAB = 50_000
TAGS_PER_POST = 30


def generate(folder: Path, n_posts: int, shards: int, fmt: str, seed: int = 0) -> tuple[int, float]:
    """Write the dump; returns (expected post_tags rows, seconds)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    vocab = np.array([f"general_tag_{i}" for i in range(VOCAB)], dtype=object)
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = -(-n_posts // shards)
    pairs = 0
    for s in range(shards):
        first = s * per_shard
        n = min(per_shard, n_posts - first)
        if n <= 0:
            break
        # skewed ranks: a few tags on most posts (1girl, solo), a long tail of rare ones
        ranks = np.minimum((VOCAB * rng.random((n, TAGS_PER_POST + 15)) ** 3).astype(np.int64), VOCAB - 1)
        kind = rng.random(n)
        objs = []
        for i in range(n):
            pid = 1000 + 2 * (first + i)
            general = sorted(set(vocab[ranks[i]].tolist()))[:TAGS_PER_POST]
            pairs += len(general)
            objs.append(_post(pid, general, kind[i]))
        path = folder / f"posts-{s:04d}.{fmt}"
        if fmt == "jsonl":
            path.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in objs))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            keys = list(dict.fromkeys(k for o in objs[:100] for k in o))
            pq.write_table(pa.table({k: [o.get(k) for o in objs] for k in keys}), path,
                           row_group_size=65_536)
    return pairs, time.perf_counter() - t0


def _post(pid: int, general: list[str], kind: float) -> dict:
    md5 = f"{(pid * 0x9E3779B97F4A7C15) & ((1 << 128) - 1):032x}"
    ext = "mp4" if kind > 0.995 else "jpg"
    artist, character, copyright_ = f"artist_{pid % 9973}", f"character_{pid % 4999}", f"series_{pid % 997}"
    obj = {
        "id": pid, "created_at": "2023-06-15T19:49:23.789-04:00", "uploader_id": 49091 + pid % 1000,
        "score": pid % 50, "source": f"https://twitter.com/someone/status/{pid}", "md5": md5,
        "last_comment_bumped_at": None, "rating": "gsqe"[pid % 4], "image_width": 1200 + pid % 800,
        "image_height": 1700 + pid % 900,
        "tag_string": " ".join(sorted(general + [artist, character, copyright_, "highres"])),
        "fav_count": pid % 100, "file_ext": ext, "last_noted_at": None, "parent_id": None,
        "has_children": False, "approver_id": None, "tag_count_general": len(general),
        "tag_count_artist": 1, "tag_count_character": 1, "tag_count_copyright": 1,
        "file_size": 100_000 + pid % 3_000_000, "up_score": pid % 50, "down_score": 0,
        "is_pending": False, "is_flagged": False, "is_deleted": bool(0.96 < kind <= 0.99),
        "tag_count": len(general) + 4, "updated_at": "2023-06-15T19:49:23.789-04:00",
        "is_banned": bool(0.99 < kind <= 0.995), "pixiv_id": None, "last_commented_at": None,
        "has_active_children": False, "bit_flags": 0, "tag_count_meta": 1, "has_large": True,
        "has_visible_children": False, "tag_string_general": " ".join(general),
        "tag_string_character": character, "tag_string_copyright": copyright_,
        "tag_string_artist": artist, "tag_string_meta": "highres",
        "file_url": f"https://cdn.donmai.us/original/{md5[:2]}/{md5[2:4]}/{md5}.{ext}",
        "large_file_url": f"https://cdn.donmai.us/sample/{md5[:2]}/{md5[2:4]}/sample-{md5}.jpg",
        "preview_file_url": f"https://cdn.donmai.us/180x180/{md5[:2]}/{md5[2:4]}/{md5}.jpg",
    }
    if obj["is_banned"]:  # as the API answers for banned/restricted posts: no md5, no URLs
        for key in ("md5", "file_url", "large_file_url", "preview_file_url"):
            del obj[key]
    return obj


def _children_cpu() -> float:
    """CPU seconds of the parsing workers (reaped children: the pool is shut down by then)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posts", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    ap.add_argument("--workers", type=int, default=None, help="parsing processes (default: as the command)")
    ap.add_argument("--batch-size", type=int, default=150_000)
    ap.add_argument("--export", action="store_true", help="also time export-catalogue --parquet")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep the dump and catalogue")
    ap.add_argument("--out", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gaudi-bench-import-"))
    result: dict = {"posts": args.posts, "shards": args.shards, "format": args.format,
                    "batch_size": args.batch_size, "cpus": os.cpu_count()}
    try:
        dump = root / "dump"
        meta = root / "dump.json"  # with --keep, a dump made for the same arguments is reused
        key = {"posts": args.posts, "shards": args.shards, "format": args.format}
        if dump.exists() and meta.exists() and json.loads(meta.read_text())["key"] == key:
            pairs, gen_s = json.loads(meta.read_text())["pairs"], 0.0
        else:
            shutil.rmtree(dump, ignore_errors=True)
            pairs, gen_s = generate(dump, args.posts, args.shards, args.format)
            meta.write_text(json.dumps({"key": key, "pairs": pairs}))
        result.update(generate_seconds=round(gen_s, 1), expected_post_tags=pairs,
                      dump_mb=round(sum(p.stat().st_size for p in dump.iterdir()) / 1e6))
        db = root / "catalogue.duckdb"
        for p in (db, Path(f"{db}.wal")):
            p.unlink(missing_ok=True)
        cat = Catalogue(db)
        result["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
        t0, c0, w0 = time.perf_counter(), time.process_time(), _children_cpu()
        summary = import_metadata(cat, dump, batch_size=args.batch_size, workers=args.workers)
        result.update(import_seconds=round(time.perf_counter() - t0, 1),
                      import_main_cpu_seconds=round(time.process_time() - c0, 1),
                      import_workers_cpu_seconds=round(_children_cpu() - w0, 1),
                      loadavg_after=[round(x, 2) for x in os.getloadavg()], summary=summary)
        result["import_posts_per_s"] = round(args.posts / result["import_seconds"])
        n_posts, n_distinct = cat.fetchone("SELECT count(*), count(DISTINCT id) FROM posts")
        n_pairs = cat.scalar("SELECT count(*) FROM post_tags")
        assert n_posts == n_distinct == args.posts, (n_posts, n_distinct)
        assert n_pairs == pairs, (n_pairs, pairs)
        assert cat.scalar("SELECT count(*) FROM post_tags WHERE tag NOT LIKE 'general_tag_%'") == 0
        result["catalogue_mb"] = round(db.stat().st_size / 1e6)
        t0 = time.perf_counter()
        again = import_metadata(cat, dump, batch_size=args.batch_size, workers=args.workers)
        result["rerun_seconds"] = round(time.perf_counter() - t0, 2)
        assert again["stored"] == 0 and again["skipped_shards"] == again["shards"]
        if args.export:
            from gaudi_engine.catalogue.parquet_export import export_parquet

            t0 = time.perf_counter()
            result["export"] = export_parquet(cat, root / "export")
            result["export_seconds"] = round(time.perf_counter() - t0, 1)
        cat.close()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
