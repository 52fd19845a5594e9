"""Speed of the sync side (DESIGN §9): API pages -> catalogue, and the catalogue at Danbooru scale.

- `bench_ingest`: posts/s of a full `sync_posts` from a LocalBooru with no added latency (HTTP
  included), and separately of parse + upsert alone over the same pages' JSON bytes (network
  aside: what DESIGN's ">= 5,000 posts/s" is about), with parse and upsert also split.
- `bench_catalogue_scale`: bulk ingest of N posts x ~K general tags through the same SQL the
  sync uses (`store.write_post_tables`) plus one build of the tag index (`ingest_seconds` counts
  both), then the studio's grid query (tag filter + a page of 48) through
  `queries.latest_posts`, next to the plain post_tags scan the index replaces.
"""
from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..booru.client import DanbooruClient
from ..booru.local_booru import LocalBooru
from ..booru.posts import loads, parse_post
from ..booru.sync import sync_posts
from ..catalogue import tag_index
from ..catalogue.db import Catalogue
from ..catalogue.store import POST_SCHEMA, write_post_tables, write_posts, write_sync_state
from ..workspace import DanbooruSettings, Workspace


def _fill_booru(booru: LocalBooru, n_posts: int, tags_per_post: int, seed: int) -> None:
    """Realistic post objects (every Danbooru field, ~`tags_per_post` general tags from a
    skewed vocabulary). Media bytes are placeholders: ingest never downloads them."""
    rng = random.Random(seed)
    vocab = [f"general_tag_{i}" for i in range(5000)]
    weights = [1.0 / (i + 10) for i in range(len(vocab))]
    for i in range(n_posts):
        general = set(rng.choices(vocab, weights, k=tags_per_post + 8))
        general = sorted(general)[:tags_per_post]
        booru.add_image_post(100 + i * 2, i.to_bytes(8, "little") + b"bench", "jpg", general,
                             rating="gsqe"[i % 4], character=[f"character_{i % 97}"],
                             copyright=[f"series_{i % 31}"], artist=[f"artist_{i % 503}"],
                             meta=["highres"], source=f"https://example.com/{i}", size=(1200, 1600))


def bench_ingest(n_posts: int = 20000, page_size: int = 200, tags_per_post: int = 25,
                 seed: int = 0) -> dict[str, Any]:
    booru = LocalBooru()
    _fill_booru(booru, n_posts, tags_per_post, seed)
    out: dict[str, Any] = {"n_posts": n_posts, "page_size": page_size, "tags_per_post": tags_per_post}
    with booru, tempfile.TemporaryDirectory(prefix="gaudi-bench-ingest-") as tmp:
        client = DanbooruClient(DanbooruSettings(base_url=booru.url, requests_per_second=0))
        # 1) the real thing: sync over HTTP from a local server with no added latency
        ws = Workspace(Path(tmp) / "http").ensure()
        cat = Catalogue(ws.catalogue_path)
        t0 = time.perf_counter()
        summary = sync_posts(ws, cat, client, page_size=page_size)
        http_s = time.perf_counter() - t0
        assert summary["stored"] == n_posts, summary
        cat.close()
        out.update(http_seconds=round(http_s, 3), http_posts_per_s=round(n_posts / http_s),
                   http_requests=summary["pages"] + 1)
        # 2) the same pages' bytes, fetched once, then parse + upsert alone
        pages: list[bytes] = []
        cursor = None
        while True:
            params = {"limit": page_size, "page": f"b{cursor}" if cursor else "1"}
            body = client.request("/posts.json", params).content
            objs = json.loads(body)
            if not objs:
                break
            pages.append(body)
            cursor = min(o["id"] for o in objs)
        ws2 = Workspace(Path(tmp) / "pure").ensure()
        cat = Catalogue(ws2.catalogue_path)
        parse_s = upsert_s = 0.0
        seen = 0
        cpu0 = time.process_time()  # CPU time too: this machine's 2 cores are often shared
        for body in pages:
            t0 = time.perf_counter()
            rows = [parse_post(o, booru.url) for o in loads(body)]
            t1 = time.perf_counter()
            with cat.transaction() as cur:
                n = write_posts(cur, rows)
                seen += n
                write_sync_state(cur, "bench", min(r["id"] for r in rows), None, False, seen)
            t2 = time.perf_counter()
            parse_s += t1 - t0
            upsert_s += t2 - t1
        t0 = time.perf_counter()
        cat.execute("CHECKPOINT")  # what the pages left in the WAL is part of their cost
        upsert_s += time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
        assert cat.scalar("SELECT count(*) FROM posts") == n_posts
        out["post_tags"] = cat.scalar("SELECT count(*) FROM post_tags")
        cat.close()
        client.close()
    out.update(parse_upsert_seconds=round(parse_s + upsert_s, 3),
               parse_upsert_posts_per_s=round(n_posts / (parse_s + upsert_s)),
               parse_posts_per_s=round(n_posts / parse_s), upsert_posts_per_s=round(n_posts / upsert_s),
               parse_upsert_posts_per_cpu_s=round(n_posts / cpu_s))
    return out


def _generated_chunk(rng: np.random.Generator, first_id: int, n: int, tags_per_post: int,
                     names: pa.Array) -> tuple[pa.Table, pa.Table]:
    """n posts and their general tags as Arrow tables, drawn from a skewed tag vocabulary."""
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    hexes = rng.bytes(16 * n).hex()
    md5 = [hexes[i:i + 32] for i in range(0, 32 * n, 32)]
    vocab = len(names)
    draws = 2 * tags_per_post
    # skewed ranks: a few tags are on most posts (like 1girl, solo), most are rare
    ranks = np.minimum((vocab * rng.random((n, draws)) ** 3).astype(np.int64), vocab - 1)
    ranks.sort(axis=1)
    keep = np.ones_like(ranks, dtype=bool)
    keep[:, 1:] = ranks[:, 1:] != ranks[:, :-1]           # distinct tags per post
    keep &= np.cumsum(keep, axis=1) <= tags_per_post       # at most tags_per_post of them
    rows = np.broadcast_to(np.arange(n)[:, None], ranks.shape)[keep]
    tags = ranks[keep]
    # dictionary-encoded names: generating 25M Python strings would dwarf the ingest being timed
    tag_col = pa.DictionaryArray.from_arrays(pa.array(tags.astype(np.int32)), names)
    pairs = pa.table({"post_id": pa.array(ids[rows]), "tag": tag_col})
    # posts.general_tags: each post's names in alphabetical order, space-separated
    alpha = np.argsort(np.argsort(names.to_numpy(zero_copy_only=False)))  # rank -> sorted position
    by_name = np.where(keep, alpha[ranks], vocab)
    by_name.sort(axis=1)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    sorted_names = names.take(pa.array(np.argsort(alpha)[by_name[by_name < vocab]]))
    general = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), sorted_names), " ")
    post = pa.table({
        "id": ids, "md5": md5, "file_ext": pa.array(["jpg"] * n), "file_size": rng.integers(50_000, 5_000_000, n),
        "rating": pa.array(np.array(list("gsqe"))[rng.integers(0, 4, n)]),
        "width": rng.integers(500, 4000, n).astype(np.int32), "height": rng.integers(500, 4000, n).astype(np.int32),
        "file_url": pa.nulls(n, pa.string()), "large_file_url": pa.nulls(n, pa.string()),
        "preview_url": pa.nulls(n, pa.string()), "is_deleted": rng.random(n) < 0.03,
        "is_banned": np.zeros(n, dtype=bool), "source": pa.nulls(n, pa.string()),
        "origin": pa.array(["bench"] * n), "created_at": pa.nulls(n, pa.string()),
        "raw": pa.array([f'{{"id":{i}}}' for i in ids.tolist()]),
        "general_tags": general,
    }, schema=POST_SCHEMA)
    return post, pairs


def bench_catalogue_scale(n_posts: int = 1_000_000, tags_per_post: int = 25, chunk: int = 100_000,
                          vocab: int = 30_000, seed: int = 0, path: str | None = None) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    names = pa.array([f"general_tag_{i}" for i in range(vocab)], pa.string())
    out: dict[str, Any] = {"n_posts": n_posts, "tags_per_post": tags_per_post, "chunk": chunk}
    with tempfile.TemporaryDirectory(prefix="gaudi-bench-scale-") as tmp:
        cat = Catalogue(path or Path(tmp) / "catalogue.duckdb")
        gen_s = ingest_s = 0.0
        for start in range(0, n_posts, chunk):
            n = min(chunk, n_posts - start)
            t0 = time.perf_counter()
            post_tbl, tag_tbl = _generated_chunk(rng, 1 + start, n, tags_per_post, names)
            t1 = time.perf_counter()
            with cat.transaction() as cur:
                write_post_tables(cur, post_tbl, tag_tbl)
            ingest_s += time.perf_counter() - t1
            gen_s += t1 - t0
        # the tag index a sync keeps up to date page by page (catalogue/tag_index.py), built once
        t0 = time.perf_counter()
        with cat.transaction() as cur:
            tag_index.refresh(cur)
        index_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cat.execute("CHECKPOINT")
        ingest_s += time.perf_counter() - t0
        out.update(post_tags=cat.scalar("SELECT count(*) FROM post_tags"),
                   ingest_seconds=round(ingest_s + index_s, 2), write_seconds=round(ingest_s, 2),
                   tag_index_seconds=round(index_s, 2), generate_seconds=round(gen_s, 2),
                   ingest_posts_per_s=round(n_posts / (ingest_s + index_s)))
        # the studio grid: posts carrying a tag, newest first, a page of 48
        counts = cat.fetchall("SELECT tag, count(*) AS n FROM post_tags GROUP BY tag ORDER BY n DESC")
        probes = {"common": counts[0], "median": counts[len(counts) // 2], "rare": counts[-1]}
        try:
            from ..catalogue.queries import latest_posts
        except ImportError:  # the media side's query module is optional for this benchmark
            latest_posts = None
        for label, (tag, n) in probes.items():
            # the plain scan the index replaces: top-48 on post_tags alone, then the join
            sql_ms = _median_ms(lambda: cat.fetchall(
                "SELECT p.id, p.md5, p.rating, p.width, p.height FROM (SELECT post_id FROM post_tags "
                "WHERE tag = ? ORDER BY post_id DESC LIMIT 48) t JOIN posts p ON p.id = t.post_id "
                "ORDER BY p.id DESC", [tag]))
            out[f"tag_page48_{label}_ms"] = sql_ms
            out[f"tag_page48_{label}_posts"] = n
            if latest_posts is not None:
                out[f"latest_posts_{label}_ms"] = _median_ms(lambda: latest_posts(cat, limit=48, tag=tag))
        out["unfiltered_page48_ms"] = _median_ms(lambda: cat.fetchall(
            "SELECT id, md5, rating FROM posts ORDER BY id DESC LIMIT 48"))
        cat.close()
    return out


def _median_ms(fn, repeats: int = 7) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 2)
