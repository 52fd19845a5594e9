"""Download throughput of `fetch-images` (DESIGN §9, BENCHMARKS.md).

A LocalBooru in a child process (so its threads do not share our GIL) serves `n_images`
incompressible PNGs of about `image_kb` KB each on loopback with no added latency; we time
`fetch_images` with `workers` threads into a fresh workspace — download, md5 check, full decode
and the `media` writes included.

    python -m gaudi_engine.bench.download --images 400 --workers 8 --image-kb 256
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import struct
import tempfile
import time
import zlib
from typing import Any


def _random_png(seed: int, image_kb: int) -> tuple[bytes, tuple[int, int]]:
    import io
    import random

    from PIL import Image

    side = max(8, int((image_kb * 1024 / 3) ** 0.5))  # RGB noise does not compress
    rng = random.Random(seed)
    img = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue(), (side, side)


def _serve(n_images: int, image_kb: int, queue, stop) -> None:
    from ..booru.local_booru import LocalBooru

    booru = LocalBooru()
    base, size = _random_png(0, image_kb)
    for i in range(n_images):
        # one noise image plus a per-post text chunk before IEND: distinct md5s, cheap to make
        text = b"n\x00" + str(i).encode()
        chunk = (struct.pack(">I", len(text)) + b"tEXt" + text
                 + struct.pack(">I", zlib.crc32(b"tEXt" + text)))
        data = base[:-12] + chunk + base[-12:]
        booru.add_image_post(i + 1, data, "png", ["bench"], size=size)
    url = booru.start()
    queue.put((url, booru.search_posts("", 10**9, "b999999999")))
    stop.wait()
    booru.stop()


def bench_download(n_images: int = 400, workers: int = 8, image_kb: int = 256) -> dict[str, Any]:
    """Images/s and MB/s of `fetch_images` from a loopback booru; returns a result dict."""
    from ..booru.client import DanbooruClient
    from ..booru.media import fetch_images
    from ..booru.posts import parse_posts
    from ..catalogue import open_catalogue
    from ..catalogue.store import upsert_posts
    from ..workspace import DanbooruSettings, Workspace

    ctx = mp.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(n_images, image_kb, queue, stop), daemon=True)
    server.start()
    tmp = tempfile.mkdtemp(prefix="gaudi-bench-download-")
    try:
        url, posts = queue.get(timeout=300)
        ws = Workspace(tmp).ensure()
        cat = open_catalogue(ws.catalogue_path)
        upsert_posts(cat, parse_posts(posts, url))
        client = DanbooruClient(DanbooruSettings(base_url=url))
        t0 = time.perf_counter()
        summary = fetch_images(ws, cat, client, max_workers=workers)
        seconds = time.perf_counter() - t0
        cat.close()
    finally:
        stop.set()
        server.join(timeout=10)
        if server.is_alive():
            server.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "images": n_images, "workers": workers, "image_kb": round(summary["bytes"] / 1024 / max(1, summary["downloaded"]), 1),
        "downloaded": summary["downloaded"], "failed": summary["failed"],
        "seconds": round(seconds, 3), "images_per_s": round(summary["downloaded"] / seconds, 1),
        "mb_per_s": round(summary["bytes"] / 1e6 / seconds, 2),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--image-kb", type=int, default=256)
    args = p.parse_args(argv)
    print(json.dumps(bench_download(args.images, args.workers, args.image_kb)))


if __name__ == "__main__":
    main()
