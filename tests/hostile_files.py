"""Hostile files as users bring them, one builder for every test that feeds pictures to the
engine (import-folder, infer single and batch, the Playground, the training datasets).

`write_hostile_folder(root)` lays out a folder of pictures that must decode (odd modes, formats,
names) and pictures that must be refused with one clear line (empty, truncated, a bomb, an HTML
page), each with a sidecar tag file, some of them not UTF-8. It returns a `HostileFolder` that
says which is which, so a test asserts every good file came through and every bad one was named.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# A name whose bytes are not UTF-8 (latin-1 "café", as old Windows zips hold them): Python keeps it
# with a lone surrogate; messages and the catalogue show it as `caf\xe9` (gaudi_engine.filenames).
LATIN1_NAME = os.fsdecode(b"caf\xe9 latin1.png")

# A 1-bit PNG of 16000 x 16000 = 256 MP: ~30 KB on disk, above every decoding limit we keep
# (Pillow refuses > 179 MP, imaging.MAX_PIXELS is 200 MP), so it must be refused from its header.
BOMB_SIDE = 16000


def image_bytes(fmt: str, size=(24, 16), colour=(200, 30, 30), frames: int = 1, mode: str = "RGB",
                **save) -> bytes:
    """A small picture encoded as `fmt`; `frames` > 1 makes an animation (frames differ in colour)."""
    buf = io.BytesIO()
    imgs = [Image.new(mode, size, tuple((c + 60 * i) % 256 for c in colour) if mode == "RGB" else colour)
            for i in range(frames)]
    if frames > 1:
        imgs[0].save(buf, fmt, save_all=True, append_images=imgs[1:], duration=100, loop=0, **save)
    else:
        imgs[0].save(buf, fmt, **save)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid, fully decodable 1-bit black PNG of side x side pixels whose file is tiny."""
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row * 1000) for _ in range(side // 1000)) + comp.compress(row * (side % 1000))
    body += comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def good_images() -> dict[str, bytes]:
    """Pictures that must decode to RGB: file name -> bytes."""
    rng = np.random.default_rng(0)
    sixteen = io.BytesIO()
    Image.fromarray((rng.integers(0, 65535, (20, 30))).astype(np.uint16)).save(sixteen, "PNG")
    palette = Image.new("RGB", (30, 20), (10, 120, 200)).quantize(8)
    pal = io.BytesIO()
    palette.save(pal, "PNG")
    cmyk = io.BytesIO()
    Image.new("CMYK", (32, 24), (0, 200, 200, 0)).save(cmyk, "JPEG")
    return {
        "plain.png": image_bytes("PNG", colour=(1, 2, 3)),
        "cmyk.jpg": cmyk.getvalue(),
        "sixteen bit.png": sixteen.getvalue(),
        "palette.png": pal.getvalue(),
        "alpha.png": image_bytes("PNG", mode="RGBA", colour=(255, 0, 0, 128)),
        "animated.gif": image_bytes("GIF", size=(20, 10), frames=3),
        "photo.webp": image_bytes("WEBP", colour=(3, 90, 3)),
        "strip.png": image_bytes("PNG", size=(1, 8000), colour=(9, 200, 9)),
        "café ünïcode 絵.jpg": image_bytes("JPEG", colour=(90, 2, 3)),
        LATIN1_NAME: image_bytes("PNG", colour=(5, 6, 200)),
    }


def bad_images() -> dict[str, bytes]:
    """Files with picture names that must be refused with one line each: name -> bytes."""
    jpeg = image_bytes("JPEG", size=(64, 64), colour=(9, 9, 9))
    png = image_bytes("PNG", size=(64, 64))
    return {
        "empty.png": b"",
        "cut.jpg": jpeg[: len(jpeg) // 2],
        "cut.png": png[:60],
        "bomb.png": bomb_png(),
        "page.png": b"<!DOCTYPE html><html><body>403 Forbidden</body></html>\n",
    }


# Tag files as users have them: not every one is UTF-8.
CP1252_TAGS = "café, naïve smile, ‘quoted’"  # cp1252-only bytes (0x91/0x92) for the quotes
LATIN1_ONLY = b"bl\xe2ue, \x81odd"  # 0x81 is undefined in cp1252: only latin-1 reads it


@dataclass
class HostileFolder:
    root: Path
    good: list[str] = field(default_factory=list)  # relative paths that must decode
    bad: list[str] = field(default_factory=list)  # relative paths that must be refused
    tags: dict[str, str] = field(default_factory=dict)  # relative image path -> its tag text
    not_utf8: list[str] = field(default_factory=list)  # sidecars written in another encoding


def write_hostile_folder(root: Path, nested: bool = False) -> HostileFolder:
    """Every good and bad picture under `root` (`nested`: the good ones spread over sub-folders),
    each with a sidecar `NAME.txt`; the CMYK picture's tags are cp1252, the palette's latin-1."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = HostileFolder(root)
    for i, (name, data) in enumerate(good_images().items()):
        rel = f"sub {i % 2}/{name}" if nested and i % 3 == 1 else name
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        out.good.append(rel)
        side = (root / rel).with_suffix(".txt")
        if name == "cmyk.jpg":
            side.write_bytes(CP1252_TAGS.encode("cp1252"))
            out.tags[rel], out.not_utf8 = CP1252_TAGS, out.not_utf8 + [side.relative_to(root).as_posix()]
        elif name == "palette.png":
            side.write_bytes(LATIN1_ONLY)
            out.tags[rel], out.not_utf8 = LATIN1_ONLY.decode("latin-1"), out.not_utf8 + [side.relative_to(root).as_posix()]
        else:
            text = "sky, red thing" if i % 2 else "Long Hair, blue_eyes\n1girl"
            side.write_text(text, encoding="utf-8")
            out.tags[rel] = text
    for name, data in bad_images().items():
        (root / name).write_bytes(data)
        (root / name).with_suffix(".txt").write_text("sky", encoding="utf-8")
        out.bad.append(name)
        out.tags[name] = "sky"
    return out
