"""`gaudi import-folder DIR`: images with sidecar tag files into the catalogue and image layout.

- Images: png, jpg, jpeg, webp, gif (only the first frame counts), in DIR and every sub-folder.
- Tags: `NAME.txt` beside `NAME.png` (or `NAME.png.txt`), comma- or newline-separated, with
  spaces or underscores in any case; stored in Danbooru form (`Long Hair` -> `long_hair`).
  A `rating:x` tag (g/s/q/e or general/sensitive/questionable/explicit) sets the rating.
- Ids are derived from the image's md5 and live at 2^40 and above, far beyond Danbooru's ids
  (about 10^7), so an import never collides with a synced post and re-importing is idempotent.
- A corrupt or empty image is reported (one line each) and skipped; the rest imports. A tag file
  that is not UTF-8 is read as cp1252/latin-1, and the run says so in one line.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import GaudiError
from ..filenames import shown
from ..progress import Progress
from ..tags import SidecarReader
from .images import IMAGE_EXTS, ImageError, verify_image
from .media import remove_stale_parts, upsert_media

ID_BASE = 1 << 40
BATCH = 500


def folder_post_id(md5: str) -> int:
    """A stable post id for an imported image: 2^40 + the md5's first 56 bits (< 2^63)."""
    return ID_BASE + int(md5[:14], 16)


def _sidecar(image: Path) -> Path | None:
    for candidate in (image.with_suffix(".txt"), image.with_name(image.name + ".txt")):
        if candidate.is_file():
            return candidate
    return None


def _copy_into(data: bytes, target: Path) -> None:
    """Write `data` to `target` via a temp file + rename, unless an identical file is there."""
    if target.is_file() and target.stat().st_size == len(data):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target.parent, target.stem)  # a copy a killed import never finished
    tmp = target.parent / f".{target.name}.{os.getpid()}.part"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def find_images(folder: Path) -> list[Path]:
    """Every image file under `folder`, sorted, skipping hidden files and folders."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower().lstrip(".") in IMAGE_EXTS:
                out.append(Path(dirpath) / name)
    return out


def import_folder(ws, cat, folder: str | os.PathLike) -> dict[str, Any]:
    """Import every image under `folder`; returns a summary with `errors` and `warnings` lists
    (one line each)."""
    from ..catalogue.store import upsert_posts

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise GaudiError(f"not a folder: {folder}")
    root = root.resolve()
    ws.ensure()
    images = find_images(root)
    if not images:
        raise GaudiError(f"no images (png, jpg, jpeg, webp, gif) under {root}")
    origin = f"folder:{shown(root)}"
    summary: dict[str, Any] = {"folder": shown(root), "found": len(images), "imported": 0,
                               "duplicates": 0, "skipped": 0, "without_tags": 0,
                               "errors": [], "warnings": [], "tag_files": None}
    seen: set[str] = set()
    sidecars = SidecarReader()
    posts: list[dict[str, Any]] = []
    media: list[dict[str, Any]] = []

    def flush() -> None:
        upsert_posts(cat, posts)
        upsert_media(cat, media)
        posts.clear()
        media.clear()

    with Progress("import-folder", total=len(images), unit="img") as bar:
        for image in images:
            rel = shown(image.relative_to(root).as_posix())  # printable and storable, whatever the bytes
            bar.update(1)
            try:
                data = image.read_bytes()
                info = verify_image(data)
            except ImageError as exc:
                summary["skipped"] += 1
                summary["errors"].append(f"skipped {rel}: {exc}")
                bar.log(summary["errors"][-1])
                continue
            except OSError as exc:
                summary["skipped"] += 1
                summary["errors"].append(f"skipped {rel}: cannot read ({exc.strerror or exc})")
                bar.log(summary["errors"][-1])
                continue
            md5 = hashlib.md5(data).hexdigest()
            if md5 in seen:  # the same picture twice in the folder: one post
                summary["duplicates"] += 1
                continue
            seen.add(md5)
            sidecar = _sidecar(image)
            if sidecar is None:
                tags, rating = [], None
                summary["without_tags"] += 1
                summary["warnings"].append(f"{rel}: no tag file ({shown(image.stem)}.txt), imported without tags")
            else:
                tags, rating = sidecars.read(sidecar, shown(sidecar.relative_to(root).as_posix()))
            target = ws.image_path(md5, info.ext)
            _copy_into(data, target)
            posts.append({
                "id": folder_post_id(md5), "md5": md5, "file_ext": info.ext, "file_size": len(data),
                "rating": rating, "width": info.width, "height": info.height,
                "file_url": None, "large_file_url": None, "preview_url": None,
                "is_deleted": False, "is_banned": False, "source": f"local:{rel}",
                "origin": origin, "created_at": None,
                "raw": json.dumps({"path": rel, "tags": tags, "rating": rating}),
                "general_tags": tags,
            })
            media.append({"md5": md5, "path": ws.rel(target), "bytes": len(data), "status": "ok",
                          "error": None})
            summary["imported"] += 1
            if len(posts) >= BATCH:
                flush()
        flush()
    summary["tag_files"] = sidecars.note()  # said once, in the summary line
    return summary


def summary_line(s: dict[str, Any]) -> str:
    """The one-line summary `gaudi import-folder` prints."""
    extra = f", {s['duplicates']} duplicates" if s["duplicates"] else ""
    names = [e.split(":", 1)[0].removeprefix("skipped ") for e in s["errors"]]
    which = f": {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}" if names else ""
    note = f"; {s['tag_files']}" if s.get("tag_files") else ""
    return (f"import-folder: {s['imported']} of {s['found']} images imported from {s['folder']} "
            f"({s['skipped']} skipped as unreadable{which}; {s['without_tags']} without tags{extra}){note}")
