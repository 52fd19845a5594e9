"""COCO run-length encoding of binary masks, byte-compatible with pycocotools.

Counts are runs over the mask read in column-major (Fortran) order, starting with a run of 0s
(possibly empty). The compressed string form is the LEB128-like encoding of `maskApi.c`
(`rleToString`): each count is delta-coded against the count two places before it (from the
fourth count on), then written 5 bits per character, offset by 48.
"""
from __future__ import annotations

import numpy as np


def mask_to_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO counts of a 2-D boolean mask."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:  # counts always start with a (here empty) run of zeros
        runs = [0] + runs
    return [int(r) for r in runs]


def counts_to_string(counts: list[int]) -> str:
    """Compress a counts list to the COCO string form."""
    out: list[str] = []
    for i, cnt in enumerate(counts):
        x = int(cnt)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative deltas end at -1
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def string_to_counts(s: str) -> list[int]:
    """Decompress the COCO string form to a counts list."""
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("truncated RLE string")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode(mask: np.ndarray) -> dict:
    """`{"size": [h, w], "counts": str}` — what pycocotools' `mask.encode` gives (counts decoded)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE needs a 2-D mask, got shape {mask.shape}")
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": counts_to_string(mask_to_counts(mask))}


def decode(rle: dict) -> np.ndarray:
    """Boolean [h, w] mask from a COCO RLE (string or uncompressed list counts)."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = string_to_counts(counts)
    total = int(sum(counts))
    if total != h * w:
        raise ValueError(f"RLE counts cover {total} pixels, size says {h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, np.asarray(counts, dtype=np.int64))
    return flat.reshape((h, w), order="F")


def area(rle: dict) -> int:
    """Number of foreground pixels."""
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts.decode("ascii") if isinstance(counts, bytes) else counts)
    return int(sum(counts[1::2]))


def bbox(mask: np.ndarray) -> list[int]:
    """COCO `[x, y, w, h]` of the foreground (all zeros when empty)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))  # no full nonzero() pass
    if len(cols) == 0:
        return [0, 0, 0, 0]
    x0, y0 = int(cols[0]), int(rows[0])
    return [x0, y0, int(cols[-1]) - x0 + 1, int(rows[-1]) - y0 + 1]
