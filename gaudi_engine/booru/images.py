"""Safe image checking for downloaded and imported files (the decoding rules themselves, the pixel
limit and the one-line reasons, live in `gaudi_engine.imaging`).

An image only counts once Pillow has decoded every pixel of it (of its first frame for GIFs):
a truncated download, an HTML error page saved as `.jpg` or a zero-byte file all fail here.
Pixel counts are checked from the header *before* decoding so a decompression bomb (a tiny
file that expands to gigabytes) is refused without allocating it.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from ..imaging import MAX_PIXELS, ImageError, check_pixels, decode_reason

# Pillow format name -> the extension we store under. jpeg is always stored as jpg.
FORMAT_EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}
IMAGE_EXTS = frozenset({"png", "jpg", "jpeg", "webp", "gif"})
# Danbooru file_ext values that are never still images (ugoira zips, videos, flash).
NOT_IMAGE_EXTS = frozenset({"mp4", "webm", "zip", "swf", "avif_anim", "mkv", "mov"})

__all__ = ["FORMAT_EXT", "IMAGE_EXTS", "NOT_IMAGE_EXTS", "MAX_PIXELS", "ImageError", "ImageInfo",
           "normalise_ext", "verify_image"]


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str  # Pillow's name: PNG, JPEG, WEBP, GIF

    @property
    def ext(self) -> str:
        return FORMAT_EXT[self.format]


def normalise_ext(ext: str | None) -> str | None:
    """`.JPEG` -> `jpg`; None stays None."""
    if not ext:
        return None
    ext = ext.lower().lstrip(".")
    return "jpg" if ext == "jpeg" else ext


def verify_image(src: str | os.PathLike | bytes | BinaryIO, max_pixels: int | None = None) -> ImageInfo:
    """Fully decode `src` (a path, bytes or a binary file) and return its size and format.

    Raises `ImageError` with a short reason for anything that is not a complete png/jpg/webp/gif
    within `max_pixels` (default `MAX_PIXELS`).
    """
    from PIL import Image, UnidentifiedImageError

    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise ImageError("empty file (0 bytes)")
        fh: BinaryIO = io.BytesIO(src)
        close = True
    elif isinstance(src, (str, os.PathLike)):
        if os.path.getsize(src) == 0:
            raise ImageError("empty file (0 bytes)")
        fh = open(src, "rb")
        close = True
    else:
        fh, close = src, False
    try:
        with warnings.catch_warnings():
            # Pillow warns on its own (lower) limit; ours is checked explicitly below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fh, formats=list(FORMAT_EXT)) as img:
                width, height = img.size
                fmt = img.format
                check_pixels(width, height, limit)
                if fmt not in FORMAT_EXT:
                    raise ImageError(f"unsupported image format {fmt}")
                if fmt == "GIF":
                    img.seek(0)  # only the first frame matters
                img.load()  # decodes every pixel: truncated data raises here
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not a png/jpg/webp/gif image") from None
    except Exception as exc:  # noqa: BLE001 - whatever Pillow raises on a hostile file: one line
        if isinstance(exc, MemoryError):
            raise
        raise ImageError(decode_reason(exc)) from None
    finally:
        if close:
            fh.close()
    return ImageInfo(width=width, height=height, format=fmt)
