"""fetch-images against a loopback booru that enforces a rate limit (429 + Retry-After): time,
429s, failures, and the pace the client ended at. For BENCHMARKS.md (issue 17.1).

    python scripts/bench_back_pressure.py --images 200 --workers 8 --limit 10

The client is the one `gaudi fetch-images` builds (default tries and backoff); the booru runs in
this process on a thread. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gaudi_engine.booru.client import DanbooruClient  # noqa: E402
from gaudi_engine.booru.local_booru import LocalBooru  # noqa: E402
from gaudi_engine.booru.media import fetch_images  # noqa: E402
from gaudi_engine.booru.posts import parse_posts  # noqa: E402
from gaudi_engine.catalogue import open_catalogue  # noqa: E402
from gaudi_engine.catalogue.store import upsert_posts  # noqa: E402
from gaudi_engine.workspace import DanbooruSettings, Workspace  # noqa: E402
from tests.fakes.danbooru import RateLimit, add_fake_posts  # noqa: E402


def run(images: int, workers: int, limit: float, retry_after: float | None, rps: float,
        resume: bool) -> dict:
    booru = LocalBooru()
    add_fake_posts(booru, images, seed=17)
    url = booru.start()
    tmp = tempfile.mkdtemp(prefix="gaudi-bench-429-")
    try:
        ws = Workspace(tmp).ensure()
        cat = open_catalogue(ws.catalogue_path)
        upsert_posts(cat, parse_posts(booru.search_posts("", 10**9, "b999999999"), url))
        limiter = RateLimit(limit, retry_after=retry_after)
        booru.faults = limiter
        settings = DanbooruSettings(base_url=url)
        kwargs = {"max_rps": rps} if rps else {}
        client = DanbooruClient(settings, **kwargs)
        t0 = time.perf_counter()
        s = fetch_images(ws, cat, client, max_workers=workers)
        seconds = time.perf_counter() - t0
        pace = getattr(client, "pace", None)
        out = {"images": images, "workers": workers, "limit_rps": limit,
               "retry_after": retry_after if retry_after is not None else "until a slot frees",
               "seconds": round(seconds, 2), "img_per_s": round(s["downloaded"] / seconds, 2),
               "downloaded": s["downloaded"], "failed": s["failed"],
               "retried_at_end": s.get("retried"), "recovered_at_end": s.get("recovered"),
               "requests": limiter.served + limiter.limited, "answers_429": limiter.limited,
               "peak_per_window": limiter.peak,
               "final_pace": pace.describe() if pace is not None else None,
               "lowest_pace": round(pace.lowest, 2) if pace is not None and pace.lowest else None,
               "first_error": s["errors"][0] if s["errors"] else None}
        if resume and s["failed"]:
            t0 = time.perf_counter()
            again = fetch_images(ws, cat, DanbooruClient(settings, **kwargs), max_workers=workers)
            out["resumed"] = {"seconds": round(time.perf_counter() - t0, 2),
                              "downloaded": again["downloaded"], "failed": again["failed"]}
        cat.close()
        return out
    finally:
        booru.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--limit", type=float, default=10.0, help="the booru's requests per second")
    p.add_argument("--retry-after", type=float, default=None,
                   help="fixed Retry-After seconds (default: until a slot frees)")
    p.add_argument("--rps", type=float, default=0.0, help="the client's --rps (0: no cap)")
    p.add_argument("--resume", action="store_true", help="rerun once if files failed")
    args = p.parse_args(argv)
    print(json.dumps(run(args.images, args.workers, args.limit, args.retry_after, args.rps,
                         args.resume)))


if __name__ == "__main__":
    main()
