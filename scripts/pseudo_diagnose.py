"""Per tag, where a pseudo-mask run goes wrong: is the soft map ranking pixels badly (AUC of the
score map against the true mask), or is the cut wrong (mask area vs true area)?

    python scripts/pseudo_diagnose.py RUN_DIR MANIFEST GT_ROOT

Prints one row per tag: n masks, all-mask IoU, AUC of the score map, median mask area, median
true area. Reads the run's index.parquet, masks (accepted and rejected) and score maps.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from gaudi_engine.train.data import read_manifest


def auc(score: np.ndarray, truth: np.ndarray) -> float:
    pos, neg = score[truth], score[~truth]
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = pd.Series(np.concatenate([pos, neg])).rank().to_numpy()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def main(run: str, manifest: str, gt_root: str) -> None:
    run_dir, gt = Path(run), Path(gt_root)
    by_id = {r["post_id"]: r for r in read_manifest(manifest)}
    df = pd.read_parquet(run_dir / "index.parquet")
    stats = defaultdict(lambda: {"inter": 0, "union": 0, "auc": [], "area": [], "true": []})
    for row in df.itertuples(index=False):
        rec = by_id.get(int(row.post_id))
        if rec is None:
            continue
        p = gt / rec["image_path"].stem / f"{row.tag}.png"
        if not p.exists():
            continue
        truth = np.asarray(Image.open(p)) > 127
        mask = np.asarray(Image.open(run_dir / row.mask_path)) > 127
        score = np.asarray(Image.open(run_dir / row.score_path)).astype(np.float32)
        s = stats[row.tag]
        s["inter"] += int((mask & truth).sum())
        s["union"] += int((mask | truth).sum())
        s["auc"].append(auc(score[::2, ::2].ravel(), truth[::2, ::2].ravel()))
        s["area"].append(mask.mean())
        s["true"].append(truth.mean())
    print(f"{'tag':14s} {'n':>4s} {'IoU':>6s} {'AUC':>6s} {'area':>6s} {'true':>6s}")
    ious, aucs = [], []
    for tag in sorted(stats):
        s = stats[tag]
        iou = s["inter"] / max(s["union"], 1)
        a = float(np.nanmean(s["auc"]))
        ious.append(iou)
        aucs.append(a)
        print(f"{tag:14s} {len(s['area']):4d} {iou:6.3f} {a:6.3f} {np.median(s['area']):6.3f} {np.median(s['true']):6.3f}")
    print(f"{'mean':14s} {'':4s} {np.mean(ious):6.3f} {np.nanmean(aucs):6.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
