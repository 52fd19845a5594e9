"""One way from a picture to what the model and every pixel step see (DESIGN §6 "Pictures as
users have them"), used by training, pseudo-labelling and inference alike.

- `open_image`: a file (or PIL image) -> RGB, safely: too many pixels is refused before decoding,
  the first frame of an animation, palette / 16-bit / CMYK / LA / alpha turned into RGB (alpha
  over white, as a browser shows it), EXIF orientation applied.
- Sizes keep the aspect and follow the segmentation convention (mmseg's `Resize(scale=(2048, 512),
  keep_ratio=True)`): the short side is set, the long side capped at `max_aspect` times it. A 2:3
  portrait is seen whole at the model's resolution, not shrunk into a square; a 1x8000 strip is
  capped instead of exploding.
- The **working image**: the picture decoded once at short side `Preprocess.working_side`
  (`working_scale` x the model's input side, whatever the original's pixel count). CAM maps,
  affinity, superpixel regions, colour statistics, validators and round-2 maps all live on it, so
  a mask does not change with the picture's pixel count. Only the final masks and soft maps are
  upsampled to the image's own size (`upsample_maps`).
- The **model input** (canvas): the working image at short side `image_size`, padded with the
  normalisation mean (0 after normalising) to a multiple of the trunk's stride. `Letterbox` says
  where the picture lies in the canvas, so maps computed on it are cropped back. Training batches
  take `image_size`-square windows of the canvas (random crops, as segmentation training does).
- `WorkingImageCache`: working images on disk, keyed by md5 + working side, so a 4k original is
  decoded once per workspace, not once per epoch, view or validator.

One interpolation everywhere: bilinear (antialiased when shrinking, as Pillow's resize does).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import GaudiError
from .filenames import shown

log = logging.getLogger(__name__)

# Larger pictures are refused from their header, before decoding: Pillow's own hard limit (2 x its
# 89 MP warning; a 16k x 11k scan still fits), so Pillow and we agree. GAUDI_MAX_IMAGE_PIXELS lowers it.
MAX_PIXELS = int(os.environ.get("GAUDI_MAX_IMAGE_PIXELS", 178_956_970))
DEFAULT_IMAGE_SIZE = 128


class ImageError(GaudiError, ValueError):
    """A picture that cannot be used (corrupt, not an image, too large to decode safely)."""


@dataclass(frozen=True)
class Preprocess:
    """How a picture becomes the model's input; stored in every checkpoint (`to_dict`)."""
    image_size: int = DEFAULT_IMAGE_SIZE  # the model input's short side (training crops: square)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    resize: str = "short-side"  # aspect kept (never a square squash); padded with the mean colour
    max_aspect: float = 2.0  # the long side is at most this x the short side's target
    stride: int = 32  # canvas sides are padded up to a multiple of this (the trunk's stride)
    working_scale: float = 1.5  # working image long side = this x image_size: regions and colour
    # statistics see finer edges than the model's input, at a fixed cost per image (128 -> 192 px)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | "Preprocess" | None) -> "Preprocess":
        """From a checkpoint's `preprocess` dict (older checkpoints lack the newer keys)."""
        if isinstance(d, Preprocess):
            return d
        d = dict(d or {})
        size = d.get("image_size", DEFAULT_IMAGE_SIZE)
        size = int(size[0] if isinstance(size, (list, tuple)) else size)
        interp = str(d.get("interpolation", "bilinear"))
        if interp not in ("bilinear",):
            log.debug("preprocess interpolation %r read as bilinear (the one interpolation)", interp)
        return cls(image_size=size, mean=tuple(float(v) for v in d.get("mean", (0.5,) * 3)),
                   std=tuple(float(v) for v in d.get("std", (0.5,) * 3)), interpolation="bilinear",
                   working_scale=float(d.get("working_scale", 1.5)),
                   max_aspect=float(d.get("max_aspect", 2.0)), stride=int(d.get("stride", 32)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @property
    def cache_key(self) -> str:
        """What a cached working image depends on besides the picture."""
        return f"s{self.working_side}a{self.max_aspect:g}"

    @property
    def working_side(self) -> int:
        """The working image's short side."""
        return max(int(round(self.image_size * self.working_scale)), self.image_size)

    def working_size(self, width: int, height: int) -> tuple[int, int]:
        return fit_short(width, height, self.working_side, self.max_aspect)

    def model_size(self, width: int, height: int) -> tuple[int, int]:
        return fit_short(width, height, self.image_size, self.max_aspect)

    @property
    def fill(self) -> tuple[int, int, int]:
        """The padding colour: the normalisation mean, so padded pixels are 0 for the model."""
        return tuple(int(round(255 * m)) for m in self.mean)


# --- decoding ---------------------------------------------------------------------------------

def open_image(source, need=None, max_pixels: int | None = None):
    """RGB PIL image from a path, file object or PIL image. With `need` ((w, h) -> the smallest
    (w, h) the caller will use), a JPEG is decoded at the smallest DCT scale that still covers it
    (a 4k JPEG decodes several times faster). Raises ImageError with one line, `NAME: reason`,
    when the picture cannot be used (`decode_reason` says which)."""
    from PIL import Image, ImageOps

    name = getattr(source, "name", None) or (str(source) if isinstance(source, (str, os.PathLike)) else "image")
    name = shown(Path(str(name)).name or str(name))
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        if isinstance(source, (str, os.PathLike)) and os.path.getsize(source) == 0:
            raise ImageError(f"{name}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit is checked below
            with Image.open(source) as im:
                w, h = im.size
                check_pixels(w, h, limit)
                if getattr(im, "is_animated", False):
                    im.seek(0)  # an animation: its first frame
                if need is not None and im.format == "JPEG":
                    tw, th = need(w, h)
                    if tw < w and th < h:
                        im.draft("RGB", (tw, th))
                im.load()
                im = ImageOps.exif_transpose(im) if im.getexif() else im
                return _to_rgb(im)
    except ImageError as exc:
        if str(exc).startswith(f"{name}: "):
            raise
        raise ImageError(f"{name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever Pillow raises on a hostile file: one line
        if isinstance(exc, (MemoryError, KeyboardInterrupt)):
            raise
        raise ImageError(f"{name}: {decode_reason(exc)}") from None


def check_pixels(width: int, height: int, limit: int | None = None) -> None:
    """Refuse a picture by its header's size (a decompression bomb is a tiny file that decodes to
    gigabytes)."""
    limit = MAX_PIXELS if limit is None else limit
    if width < 1 or height < 1:
        raise ImageError(f"empty image ({width}x{height})")
    if width * height > limit:
        raise ImageError(f"{width}x{height} is too large to decode safely ({width * height / 1e6:.0f} MP > "
                         f"{limit / 1e6:.0f} MP): refused as a possible decompression bomb")


def decode_reason(exc: BaseException) -> str:
    """Why Pillow could not decode a file, in a few words (no path, one line)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, Image.DecompressionBombError):
        m = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(m.group(1)) / 1e6:.0f} MP" if m else "too many pixels"
        return f"too large to decode safely ({size} > {MAX_PIXELS / 1e6:.0f} MP): refused as a possible decompression bomb"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "a folder, not a picture"
    if isinstance(exc, PermissionError):
        return "cannot read the file (permission denied)"
    if isinstance(exc, UnidentifiedImageError):
        return "not a picture (png, jpg, webp, gif, bmp) Pillow can read"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = text.replace(str(getattr(exc, "filename", "") or "\0"), "").strip(" :'")
    return f"truncated or corrupt picture ({text})"


def _to_rgb(im):
    """Any mode -> RGB: alpha over white, 16-bit and float greys scaled to 8 bits, palettes,
    CMYK and YCbCr converted."""
    from PIL import Image

    if im.mode == "RGB":
        return im.copy() if getattr(im, "fp", None) is not None else im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = im.convert("RGBA")
        back = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(back, rgba).convert("RGB")
    return im.convert("RGB")


# --- geometry ---------------------------------------------------------------------------------

def fit_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(w, h) with the aspect kept and the long side `long_side`; no side under 1 px."""
    s = long_side / max(width, height)
    return max(1, int(round(width * s))), max(1, int(round(height * s)))


def fit_short(width: int, height: int, short_side: int, max_aspect: float = 2.0) -> tuple[int, int]:
    """(w, h) with the aspect kept, the short side `short_side`, the long side at most
    `max_aspect` x `short_side`; no side under 1 px."""
    s = short_side / min(width, height)
    s = min(s, max_aspect * short_side / max(width, height))
    return max(1, int(round(width * s))), max(1, int(round(height * s)))


class Letterbox(NamedTuple):
    """Where the picture lies in the model's canvas (canvas pixels; canvas `height` x `width`)."""
    height: int
    width: int
    x0: int
    y0: int
    w: int
    h: int

    def crop(self, t, grid: tuple[int, int] | None = None):
        """The picture's part of anything laid over the canvas ([..., gh, gw], any grid)."""
        gh, gw = grid or t.shape[-2:]
        y0, y1 = _span(self.y0, self.h, self.height, gh)
        x0, x1 = _span(self.x0, self.w, self.width, gw)
        return t[..., y0:y1, x0:x1]


def _span(start: int, length: int, side: int, n: int) -> tuple[int, int]:
    a = int(np.floor(start * n / side + 1e-6))
    b = int(np.ceil((start + length) * n / side - 1e-6))
    return a, max(b, a + 1)


def _pad_to(n: int, stride: int) -> int:
    return max(stride, -(-n // stride) * stride)


def canvas_box(width: int, height: int, pre: "Preprocess") -> Letterbox:
    """The canvas of a working image of (width, height): the picture at the model's size, centred
    in a canvas padded up to the stride, and to at least `image_size` a side (a training window)."""
    w, h = pre.model_size(width, height)
    cw, ch = (max(_pad_to(n, pre.stride), pre.image_size) for n in (w, h))
    return Letterbox(ch, cw, (cw - w) // 2, (ch - h) // 2, w, h)


def picture_box(size: tuple[int, int], pre: "Preprocess") -> Letterbox:
    """Where a picture of `size` (w, h) lies in its model canvas (via its working size, exactly
    as `canvas` places it)."""
    return canvas_box(*pre.working_size(*size), pre)


def resize_array(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [h, w(, c)] -> [size[1], size[0](, c)], bilinear (antialiased when shrinking)."""
    from PIL import Image

    if arr.shape[1] == size[0] and arr.shape[0] == size[1]:
        return arr
    return np.asarray(Image.fromarray(arr).resize(size, Image.BILINEAR, reducing_gap=3.0))


# --- the working image and the model input ---------------------------------------------------

@dataclass
class WorkingImage:
    """A picture at working size (uint8 [h, w, 3], aspect kept) and its own size."""
    pixels: np.ndarray
    size: tuple[int, int]  # (width, height) of the original picture
    name: str = ""
    preview: Any = None  # with `load_working(preview_side=...)`: the picture as PIL, long side <= that

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape[:2]


def to_working(image, pre: Preprocess, name: str = "", size: tuple[int, int] | None = None) -> WorkingImage:
    """A PIL image -> its WorkingImage. `size`: the picture's own (w, h) when `image` was decoded
    smaller (a JPEG at a DCT scale): the working size follows the picture, not the decode."""
    from PIL import Image

    w, h = size or image.size
    im = image if image.mode == "RGB" else _to_rgb(image)
    small = im.resize(pre.working_size(w, h), Image.BILINEAR, reducing_gap=3.0)
    return WorkingImage(np.asarray(small, np.uint8), (int(w), int(h)), name)


def load_working(path, pre: Preprocess, cache: "WorkingImageCache | None" = None, md5: str | None = None,
                 preview_side: int | None = None) -> WorkingImage:
    """The working image of a file: from the cache when it holds it, else decoded (and stored).
    `preview_side`: also keep the picture itself, shrunk to at most that long side (overlays)."""
    from PIL import Image

    if cache is not None and not preview_side:
        hit = cache.get(path, pre.cache_key, md5)
        if hit is not None:
            return hit

    def need(w: int, h: int) -> tuple[int, int]:
        a = pre.working_size(w, h)
        b = fit_size(w, h, min(preview_side, max(w, h))) if preview_side else (0, 0)
        return max(a[0], b[0]), max(a[1], b[1])

    image = open_image(path, need=need)
    work = to_working(image, pre, name=str(path), size=_original_size(path) or image.size)
    if preview_side:
        fit = fit_size(*image.size, min(preview_side, max(image.size)))
        work.preview = image if fit == image.size else image.resize(fit, Image.BILINEAR, reducing_gap=3.0)
    if cache is not None:
        cache.put(path, work, pre.cache_key, md5)
    return work


def _original_size(path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            orient = im.getexif().get(0x0112, 1)
            return (h, w) if orient in (5, 6, 7, 8) else (w, h)
    except Exception:  # noqa: BLE001 - open_image already reported what is wrong with it
        return None


def canvas(pixels: np.ndarray, pre: Preprocess) -> tuple[np.ndarray, Letterbox]:
    """uint8 [H, W, 3] model canvas of a working image's pixels, and where they lie in it."""
    box = canvas_box(pixels.shape[1], pixels.shape[0], pre)
    out = np.empty((box.height, box.width, 3), np.uint8)
    out[:] = np.array(pre.fill, np.uint8)
    out[box.y0:box.y0 + box.h, box.x0:box.x0 + box.w] = resize_array(pixels, (box.w, box.h))
    return out, box


def letterbox_plane(plane: np.ndarray, box: Letterbox, fill: float = 0) -> np.ndarray:
    """A single-channel map or mask [h, w] (any size) laid into the canvas like its picture: uint8
    resized bilinearly, bool masks resized as 0/255 and thresholded at half."""
    if plane.dtype == bool:
        return letterbox_plane(plane.astype(np.uint8) * 255, box, fill * 255) >= 128
    out = np.full((box.height, box.width), fill, dtype=plane.dtype)
    out[box.y0:box.y0 + box.h, box.x0:box.x0 + box.w] = resize_array(plane, (box.w, box.h))
    return out


def square_window(t, size: int, u: tuple[float, float] | None = None):
    """A `size` x `size` window of a canvas t [..., H, W] (both sides >= size): at fractions `u`
    of the free room (a random crop in training), centred when None."""
    h, w = t.shape[-2:]
    fy, fx = u if u is not None else (0.5, 0.5)
    y0, x0 = int(round(fy * (h - size))), int(round(fx * (w - size)))
    return t[..., y0:y0 + size, x0:x0 + size]


def training_shape(box: Letterbox, pre: Preprocess) -> tuple[int, int]:
    """(h, w) of a picture's training crop: its sides in the canvas rounded down to the stride (at
    least `image_size`). Pictures of one shape batch together (aspect-ratio buckets), so training
    sees the whole picture but for < one stride, where a square window dropped a third of a 2:3
    portrait (the shoes or the hair its tags name)."""
    return tuple(max(pre.image_size, n // pre.stride * pre.stride) for n in (box.h, box.w))


def picture_window(t, box: Letterbox, shape: tuple[int, int], u: tuple[float, float] | None = None):
    """A `shape` (h, w) crop of a canvas t [..., H, W] over the picture `box`: at fractions `u` of
    the picture's spare room (random in training), centred when None; a side longer than the
    picture's takes canvas padding evenly around it."""
    fy, fx = u if u is not None else (0.5, 0.5)
    big_h, big_w = t.shape[-2:]
    out = []
    for f, n, at, size, limit in ((fy, box.h, box.y0, shape[0], big_h), (fx, box.w, box.x0, shape[1], big_w)):
        start = at + int(round(f * (n - size))) if n >= size else at - (size - n) // 2
        out.append(min(max(start, 0), limit - size))
    y0, x0 = out
    return t[..., y0:y0 + shape[0], x0:x0 + shape[1]]


def normalise(canvas_u8, pre: Preprocess):
    """uint8 [..., H, W, 3] (numpy) or float [.., 3, H, W] in 0..1 (torch) -> normalised [.., 3, H, W]."""
    import torch

    t = canvas_u8
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(t)).movedim(-1, -3).float() / 255.0
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(3, 1, 1)
    return (t - mean) / std


def model_input(work: WorkingImage | np.ndarray, pre: Preprocess):
    """(x [3, H, W] normalised, Letterbox) for a working image."""
    pixels = work.pixels if isinstance(work, WorkingImage) else work
    c, box = canvas(pixels, pre)
    return normalise(c, pre), box


def maps_to_working(maps, box: Letterbox, shape: tuple[int, int]):
    """Maps over the canvas (torch [..., gh, gw]) -> the picture's part, resized to `shape` (h, w)."""
    import torch.nn.functional as F

    t = box.crop(maps)
    lead = t.shape[:-2]
    t = t.reshape(-1, 1, *t.shape[-2:]).float()
    t = F.interpolate(t, size=shape, mode="bilinear", align_corners=False)
    return t.reshape(*lead, *shape)


def upsample_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float [K, h, w] working-size maps -> [K, H, W] at the image's own (width, height), bilinear:
    the one full-resolution step. Masks are these maps thresholded, so their edges stay smooth."""
    import torch
    import torch.nn.functional as F

    w, h = size
    if maps.shape[-2:] == (h, w):
        return maps.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[:, 0].numpy()


def upsample_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool [h, w] at working size -> bool [H, W] at the image's own (width, height)."""
    return upsample_maps(mask[None].astype(np.float32), size)[0] >= 0.5


# --- the decoded-image cache -----------------------------------------------------------------

@dataclass
class WorkingImageCache:
    """Working images as PNG files under `root`, named by the original's md5 and the working
    geometry (`Preprocess.cache_key`). A missing md5 is replaced by one of the file's path, size
    and mtime."""
    root: Path
    hits: int = 0
    misses: int = 0
    _warned: bool = field(default=False, repr=False)

    def key(self, path, side: str, md5: str | None) -> Path:
        if not md5:
            st = os.stat(path)
            md5 = hashlib.md5(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        return Path(self.root) / side / md5[:2] / f"{md5}.png"

    def get(self, path, side: str, md5: str | None = None) -> WorkingImage | None:
        from PIL import Image

        try:
            f = self.key(path, side, md5)
            with Image.open(f) as im:
                im.load()
                size = (int(im.info["orig_w"]), int(im.info["orig_h"]))
                pixels = np.asarray(im.convert("RGB"), np.uint8)
        except (OSError, KeyError, ValueError, SyntaxError, EOFError):  # absent or damaged: decode again
            self.misses += 1
            return None
        self.hits += 1
        return WorkingImage(pixels, size, str(path))

    def put(self, path, work: WorkingImage, side: str, md5: str | None = None) -> None:
        from PIL import Image, PngImagePlugin

        try:
            f = self.key(path, side, md5)
            f.parent.mkdir(parents=True, exist_ok=True)
            info = PngImagePlugin.PngInfo()
            info.add_text("orig_w", str(work.size[0]))
            info.add_text("orig_h", str(work.size[1]))
            tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
            Image.fromarray(work.pixels).save(tmp, format="PNG", pnginfo=info, compress_level=1)
            os.replace(tmp, f)
        except OSError as exc:  # a read-only or full disk: work on without the cache
            if not self._warned:
                log.warning("image cache %s not writable (%s); decoding without it", self.root, exc)
                self._warned = True


def cache_for(manifest=None, cache_dir=None) -> WorkingImageCache | None:
    """The cache a run uses: `cache_dir` ("none" turns it off), else `GAUDI_IMAGE_CACHE`, else
    `cache/` beside the manifest (a workspace's `data/cache/`)."""
    choice = cache_dir or os.environ.get("GAUDI_IMAGE_CACHE")
    if choice and str(choice).lower() == "none":
        return None
    if choice:
        return WorkingImageCache(Path(choice))
    if manifest is not None:
        return WorkingImageCache(Path(manifest).resolve().parent / "cache")
    return None
