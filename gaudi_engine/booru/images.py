"""Safe image decoding for downloaded and imported files.

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

from ..errors import GaudiError

# Pillow format name -> the extension we store under. jpeg is always stored as jpg.
FORMAT_EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}
IMAGE_EXTS = frozenset({"png", "jpg", "jpeg", "webp", "gif"})
# Danbooru file_ext values that are never still images (ugoira zips, videos, flash).
NOT_IMAGE_EXTS = frozenset({"mp4", "webm", "zip", "swf", "avif_anim", "mkv", "mov"})

# Pillow warns above 89 MP and refuses above 2x that; big legitimate Danbooru scans sit between
# the two, so our cap is Pillow's hard limit (lower it with GAUDI_MAX_IMAGE_PIXELS).
MAX_PIXELS = int(os.environ.get("GAUDI_MAX_IMAGE_PIXELS", 178_956_970))


class ImageError(GaudiError):
    """A file that is not a usable image (corrupt, truncated, empty, unsupported, too large)."""


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
                if width <= 0 or height <= 0:
                    raise ImageError(f"bad image size {width}x{height}")
                if width * height > limit:
                    raise ImageError(
                        f"image too large ({width}x{height} = {width * height:,} pixels, "
                        f"limit {limit:,}): refused as a possible decompression bomb")
                if fmt not in FORMAT_EXT:
                    raise ImageError(f"unsupported image format {fmt}")
                if fmt == "GIF":
                    img.seek(0)  # only the first frame matters
                img.load()  # decodes every pixel: truncated data raises here
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not a png/jpg/webp/gif image") from None
    except Image.DecompressionBombError:
        raise ImageError(f"image too large (over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels): "
                         f"refused as a possible decompression bomb") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncation/corruption as OSError ("image file is truncated", ...).
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"corrupt image: {reason}") from None
    finally:
        if close:
            fh.close()
    return ImageInfo(width=width, height=height, format=fmt)
