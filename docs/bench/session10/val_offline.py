"""Offline: candidate validator scores vs true IoU for a pseudo-mask run (ccp-dev train/gt)."""
import sys
from pathlib import Path
import numpy as np, pandas as pd
from PIL import Image
from scipy.stats import spearmanr
from gaudi_engine.train.data import read_manifest

run, manifest, gt = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
by_id = {r["post_id"]: r for r in read_manifest(manifest)}
df = pd.read_parquet(run / "index.parquet")
rows = []
for row in df.itertuples(index=False):
    rec = by_id.get(int(row.post_id))
    if rec is None: continue
    p = gt / rec["image_path"].stem / f"{row.tag}.png"
    if not p.exists(): continue
    truth = np.asarray(Image.open(p)) > 127
    mask = np.asarray(Image.open(run / row.mask_path)) > 127
    s = np.asarray(Image.open(run / row.score_path)).astype(np.float32) / 255.0
    iou = (mask & truth).sum() / max((mask | truth).sum(), 1)
    t = row.threshold
    hi, lo = s >= min(t + 0.1, 0.99), s >= max(t - 0.1, 0.01)
    stab = hi.sum() / max(lo.sum(), 1)
    d = dict(row._asdict()); d.update(iou=iou, stability=stab, peakiness=float(s.max() - np.median(s)),
             inside_hi=float((s[mask] >= 0.8).mean()) if mask.any() else 0.0)
    rows.append(d)
d = pd.DataFrame(rows)
med = d.groupby("tag")["area"].transform("median")
d["typical_area"] = -np.abs(np.log((d["area"] + 1e-4) / (med + 1e-4)))
cols = ["cam_score", "consistency_iou", "deletion_drop", "insertion_keep", "prob", "quality", "margin",
        "stability", "peakiness", "inside_hi", "typical_area", "area"]
print(run, len(d), "mean IoU", round(d.iou.mean(), 3))
print("pooled:  ", {c: round(spearmanr(d[c], d.iou).statistic, 2) for c in cols})
per = {c: np.nanmean([spearmanr(g[c], g.iou).statistic for _, g in d.groupby("tag") if len(g) >= 8]) for c in cols}
print("per-tag: ", {c: round(v, 2) for c, v in per.items()})
