"""The demo workspace: SynthBooru scenes served by a LocalBooru (a Danbooru-compatible server on
loopback) and synced into the catalogue exactly as a real booru would be — posts, images, tags,
wiki — with SynthBooru's tag descriptions imported. No account, no network.

Layout it adds to a workspace:
  demo_source/        SynthBooru's output (NAME.png, NAME.txt, gt/, tag_descriptions.json)
  demo.json           what was built (n, size, seed, counts); its presence means "built"
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .errors import GaudiError
from .workspace import DanbooruSettings, Workspace

DEMO_MARKER = "demo.json"
DEMO_SOURCE = "demo_source"
DEMO_RPS = 50.0  # the local booru is ours: no need for Danbooru's politeness


def demo_source(ws: Workspace) -> Path:
    return ws.root / DEMO_SOURCE


def is_built(ws: Workspace) -> bool:
    return (ws.root / DEMO_MARKER).exists()


def generate_source(ws: Workspace, n: int, size: tuple[int, int], seed: int) -> Path:
    """SynthBooru scenes into demo_source/ (kept when already generated with the same settings)."""
    from . import synth

    src = demo_source(ws)
    stamp = src / ".generated.json"
    want = {"n": n, "size": list(size), "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return src
    src.mkdir(parents=True, exist_ok=True)
    synth.generate(src, n, seed=seed, size=tuple(size))
    stamp.write_text(json.dumps(want))
    return src


def start_demo_booru(ws: Workspace):
    """A LocalBooru serving demo_source/ on a free loopback port (started)."""
    from .booru.local_booru import LocalBooru

    src = demo_source(ws)
    if not src.is_dir():
        raise GaudiError(f"{ws.rel(src)} is missing: run `gaudi demo` first")
    booru = LocalBooru.from_folder(src)
    booru.start()
    return booru


def demo_settings(base_url: str) -> DanbooruSettings:
    """Settings for the local demo booru: never the user's Danbooru credentials."""
    return DanbooruSettings(base_url=base_url, requests_per_second=DEMO_RPS)


def sync_from_booru(ws: Workspace, cat, base_url: str, limit: int | None = None,
                    max_workers: int = 4) -> dict[str, Any]:
    """Posts, images, tags, wiki and wiki descriptions from a booru into the catalogue."""
    from .booru.client import DanbooruClient
    from .booru.media import fetch_images
    from .booru.sync import sync_posts, sync_tags, sync_wiki

    client = DanbooruClient(demo_settings(base_url))
    summary: dict[str, Any] = {}
    summary["posts"] = sync_posts(ws, cat, client, tags="", rating="all", limit=limit)
    summary["media"] = fetch_images(ws, cat, client, max_workers=max_workers)
    summary["tags"] = sync_tags(cat, client)
    summary["wiki"] = sync_wiki(cat, client)
    return summary


def build_demo(ws: Workspace, n: int = 600, size: tuple[int, int] = (128, 192), seed: int = 0,
               force: bool = False) -> dict[str, Any]:
    """Build (once) the demo workspace. Returns what demo.json records."""
    from .catalogue import open_catalogue
    from .text.descriptions import import_json

    marker = ws.root / DEMO_MARKER
    if marker.exists() and not force:
        return json.loads(marker.read_text(encoding="utf-8"))
    t0 = time.time()
    ws.ensure()
    cat = open_catalogue(ws.catalogue_path)  # first: fails fast if a studio holds the workspace
    try:
        src = generate_source(ws, n, size, seed)
        booru = start_demo_booru(ws)
        try:
            summary = sync_from_booru(ws, cat, booru.url)
        finally:
            booru.stop()
        desc = src / "tag_descriptions.json"
        if desc.exists():
            import_json(cat, desc)
        from .catalogue.queries import counts

        info = {"n": n, "size": list(size), "seed": seed, "source": DEMO_SOURCE,
                "counts": _jsonable(counts(cat)), "seconds": round(time.time() - t0, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    finally:
        cat.close()  # the studio launched next opens it
    marker.write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
