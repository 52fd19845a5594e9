"""A run's files (DESIGN §6): each post's PNGs and index rows, the per-shard parts files that make
a run resumable, the merged `index.parquet`, and how the posts split into shards.

  masks/<post_id>/<tag>.png      accepted masks (0/255, image size)
  rejected/<post_id>/<tag>.png   rejected masks, and rejected parts of accepted ones
  scores/<post_id>/<tag>.png     soft score map (8-bit)
  parts/shard-I-of-N.jsonl       one line per finished post (its index rows), written after the
                                 post's PNGs: resumability (a killed run's posts without a line are redone)
  index.parquet                  all rows of all parts, sorted by (post_id, tag)
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO

import numpy as np

from ..child_process import pid_alive
from ..errors import GaudiError
from ..imaging import upsample_mask, upsample_maps
from ..tags import tag_filename

INDEX_COLUMNS = ["post_id", "tag", "accepted", "reason", "area", "cam_score", "consistency_iou",
                 "deletion_drop", "insertion_keep", "prob", "quality", "threshold", "margin",
                 "parts", "parts_rejected", "width", "height", "mask_path", "score_path", "round"]


def parse_shard(spec: str | None) -> tuple[int, int]:
    if not spec:
        return 0, 1
    try:
        i, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise GaudiError(f"--shard must look like I/N (e.g. 0/4), got {spec!r}") from None
    if n < 1 or not 0 <= i < n:
        raise GaudiError(f"--shard {spec}: need 0 <= I < N")
    return i, n


def shard_records(records: list[dict], shard: tuple[int, int]) -> list[dict]:
    i, n = shard
    recs = sorted(records, key=lambda r: r["post_id"])
    lo, hi = (len(recs) * i) // n, (len(recs) * (i + 1)) // n
    return recs[lo:hi]


def _write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(arr).save(tmp, format="PNG", compress_level=1)  # 0/255 masks: still small
    os.replace(tmp, path)


def write_post(out: Path, post_id: int, recs: dict[str, dict], size: tuple[int, int], round_: int) -> list[dict]:
    """Write one post's PNGs, upsampled from working size to the image's own `size` (w, h), and
    return its index rows."""
    rows = []
    w, h = size

    def png(rel: str, mask: np.ndarray) -> None:
        _write_png(out / rel, upsample_mask(mask, size).astype(np.uint8) * 255)

    for tag, r in sorted(recs.items()):
        name = tag_filename(tag)
        score_rel = f"scores/{post_id}/{name}"
        score = upsample_maps(r["score_map"][None], size)[0]
        _write_png(out / score_rel, np.round(np.clip(score, 0, 1) * 255).astype(np.uint8))
        if r["accepted"]:
            mask_rel = f"masks/{post_id}/{name}"
            png(mask_rel, r["mask"])
            if r["rejected_mask"].any():
                png(f"rejected/{post_id}/{name}", r["rejected_mask"])
        else:
            mask_rel = f"rejected/{post_id}/{name}"
            png(mask_rel, r["mask"] | r["rejected_mask"])
        rows.append({"post_id": int(post_id), "tag": tag, "accepted": bool(r["accepted"]),
                     "reason": r["reason"], "area": float(r["mask"].mean()),
                     "cam_score": r["cam_score"], "consistency_iou": r["consistency_iou"],
                     "deletion_drop": r["deletion_drop"], "insertion_keep": r["insertion_keep"],
                     "prob": r["prob"], "quality": r["quality"], "threshold": r["threshold"],
                     "margin": r["margin"], "parts": int(r["parts"]),
                     "parts_rejected": int(r["parts_rejected"]), "width": int(w), "height": int(h),
                     "mask_path": mask_rel, "score_path": score_rel, "round": int(round_)})
    return rows


def _clean(v):
    if isinstance(v, float) and v != v:
        return None  # NaN -> null in JSON, NULL in Parquet
    return v


def part_line(post_id: int, rows: list[dict]) -> str:
    """One finished post's line in its shard's parts file."""
    return json.dumps({"post_id": post_id, "rows": [{k: _clean(v) for k, v in r.items()} for r in rows]}) + "\n"


def open_part(path: Path) -> TextIO:
    """A shard's parts file opened for appending, after cutting off a last line that a kill left
    half-written (that post is redone; appended after it, the next line would be spoilt too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with open(path, "r+b") as fh:
            end = fh.seek(0, os.SEEK_END)
            pos = end
            while pos > 0:  # back to the last newline, a block at a time (parts files grow large)
                step = min(1 << 16, pos)
                fh.seek(pos - step)
                cut = fh.read(step).rfind(b"\n")
                if cut >= 0:
                    pos = pos - step + cut + 1
                    break
                pos -= step
            if pos < end:
                fh.truncate(pos)
    return open(path, "a", encoding="utf-8")


def done_posts(out: Path) -> set[int]:
    done: set[int] = set()
    for part in sorted((out / "parts").glob("*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            try:
                done.add(int(json.loads(line)["post_id"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a kill: that post is redone
    return done


def merge_index(out: Path) -> int:
    """Rebuild index.parquet from every part (atomic replace). Returns the number of rows."""
    import pandas as pd

    rows, seen = [], set()
    for part in sorted((out / "parts").glob("*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec["post_id"] in seen:
                continue
            seen.add(rec["post_id"])
            rows.extend(rec["rows"])
    df = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    df = df.sort_values(["post_id", "tag"], kind="stable").reset_index(drop=True)
    df = df.astype({"post_id": "int64", "accepted": "bool", "parts": "int64", "parts_rejected": "int64",
                    "width": "int64", "height": "int64", "round": "int64"})
    for c in ("area", "cam_score", "consistency_iou", "deletion_drop", "insertion_keep", "prob",
              "quality", "threshold", "margin"):
        df[c] = df[c].astype("float64")
    _remove_dead_writers_temps(out)
    tmp = out / f"{_INDEX_TMP}{os.getpid()}"  # one per process: shards merge at the same time
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out / "index.parquet")
    return len(df)


_INDEX_TMP = "index.parquet.tmp"


def _remove_dead_writers_temps(out: Path) -> None:
    """Delete index temp files whose writer no longer runs (a merge killed mid-write); a running
    shard's own temp file is left alone."""
    for tmp in out.glob(f"{_INDEX_TMP}*"):
        pid = tmp.name[len(_INDEX_TMP):]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)

