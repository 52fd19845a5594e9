"""How well an align checkpoint's text-CAM ranks each tag's pixels (AUC against the true masks),
before any thresholding: `python scripts/cam_auc.py ALIGN_CKPT MANIFEST GT_ROOT [N]` on the first N
posts of MANIFEST that have masks (default 60). Also prints each map's share above half its peak."""
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gaudi_engine.imaging import load_working, model_input
from gaudi_engine.models.checkpoint import load_align
from gaudi_engine.pseudo.cam import CamConfig, text_cam
from gaudi_engine.models.tag_texts import TagTexts
from gaudi_engine.train.data import read_manifest

sys.path.insert(0, str(Path(__file__).parent))
from pseudo_diagnose import auc  # noqa: E402

ckpt, manifest, gt_root = sys.argv[1:4]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 60
bundle = load_align(ckpt, "cpu")
from gaudi_engine.imaging import Preprocess  # noqa: E402
pre = Preprocess.from_dict(bundle.preprocess)
model = bundle.model.eval()
texts = TagTexts(model, bundle.vocab, bundle.text_emb, bundle.descriptions or {})
recs = [r for r in read_manifest(manifest) if (Path(gt_root) / r["image_path"].stem).is_dir()][:n]
res = defaultdict(list)
spread = defaultdict(list)
for rec in recs:
    tags = list(dict.fromkeys(rec["tags"]))
    img = load_working(rec["image_path"], pre)
    x, box = model_input(img, pre)
    cam = text_cam(model, x, texts.get(tags), tags, CamConfig(mode="all"))
    probs = box.crop(cam.probs.unsqueeze(0))
    for k, t in enumerate(tags):
        p = Path(gt_root) / rec["image_path"].stem / f"{t}.png"
        if not p.exists():
            continue
        g = np.asarray(Image.open(p)) > 127
        m = F.interpolate(probs[:, k:k + 1], size=g.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
        res[t].append(auc(m[::2, ::2].ravel(), g[::2, ::2].ravel()))
        spread[t].append(float((m >= 0.5 * m.max()).mean()))
for t in sorted(res):
    print(f"{t:12s} n={len(res[t]):3d} AUC {np.nanmean(res[t]):.3f}  half-peak area {np.median(spread[t]):.3f}")
print(f"mean AUC {np.nanmean([np.nanmean(v) for v in res.values()]):.3f}")
