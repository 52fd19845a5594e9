"""Pictures users upload to the studio (the Playground and its `/infer` API).

- A size limit: Gradio refuses a larger file at upload (`launch(max_file_size=...)`: the browser
  says so before sending it, the server answers 413), and the handler checks again, so the limit
  holds whatever way a file arrives, with one line that says how to raise it.
- Decoding is the engine's (`imaging.open_image`), never Gradio's: `picture_upload` hands the
  handler the uploaded file's path, so an HTML page named .png, a truncated file or a
  decompression bomb becomes one visible line naming the file instead of a Pillow exception
  inside Gradio.
"""
from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from gaudi_engine.errors import GaudiError

DEFAULT_MAX_UPLOAD_MB = 50.0  # a 4k PNG original is ~20-30 MB


def max_upload_bytes(mb: float | str | None = None) -> int:
    """The upload limit in bytes: `mb`, else $GAUDI_MAX_UPLOAD_MB, else 50 MB."""
    raw = mb if mb is not None else os.environ.get("GAUDI_MAX_UPLOAD_MB") or DEFAULT_MAX_UPLOAD_MB
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise GaudiError(f"upload limit {raw!r} is not a number of MB (--max-upload-mb / GAUDI_MAX_UPLOAD_MB)") from None
    if value <= 0:
        raise GaudiError(f"upload limit {raw!r} must be more than 0 MB")
    return int(value * 1024 * 1024)


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def check_upload_size(path: str | os.PathLike, limit: int) -> None:
    """GaudiError (one line) when the uploaded file is larger than `limit` bytes."""
    size = os.path.getsize(path)
    if size > limit:
        raise GaudiError(f"{Path(path).name} is {_mb(size)}, over the studio's upload limit of {_mb(limit)} "
                         f"(start it with --max-upload-mb N to allow more)")


def open_upload(value, limit: int):
    """An uploaded picture (a path from `picture_upload`, or a PIL image) as RGB, checked for size
    and decoded safely; GaudiError with one line when it cannot be used."""
    from gaudi_engine.imaging import open_image

    if value is None:
        raise GaudiError("upload an image first")
    if isinstance(value, (str, os.PathLike)):
        check_upload_size(value, limit)
    return open_image(value)


def picture_upload(**kwargs) -> gr.Image:
    """A gr.Image whose uploaded file reaches the handler as its path, not decoded by Gradio.
    (The method is set on the instance: Gradio writes a .pyi beside any Component subclass.)"""
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    gradio_preprocess = image.preprocess

    def preprocess(payload):
        if payload is None or payload.path is None or (payload.url or "").startswith("data:"):
            return gradio_preprocess(payload)  # webcam / pasted data: Gradio's own path
        return str(payload.path)

    image.preprocess = preprocess
    return image
