"""Offline: does the ImageNet trunk know where the person is? AUC of objectness maps vs the union of
all GT masks (ccp: the person's clothes+hair; girl set: 1girl)."""
import sys
from pathlib import Path
import numpy as np, torch, timm, torch.nn.functional as F
from PIL import Image
from gaudi_engine.models.lite_weights import load_lite_imagenet
from gaudi_engine.train.data import read_manifest

def auc(score, truth):
    from scipy.stats import rankdata
    pos, neg = score[truth], score[~truth]
    if not len(pos) or not len(neg): return float("nan")
    r = rankdata(np.concatenate([pos, neg]))
    return float((r[:len(pos)].sum() - len(pos)*(len(pos)+1)/2) / (len(pos)*len(neg)))

manifest, gt, n, SIDE = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
only = sys.argv[5] if len(sys.argv) > 5 else None
m = timm.create_model("efficientnet_lite0", pretrained=False)
load_lite_imagenet(m, "lite0_imagenet", with_classifier=True)
m.eval()
mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1); std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
res = {}
k = 0
for r in read_manifest(manifest):
    d = gt / r["image_path"].stem
    if not d.exists(): continue
    masks = [np.asarray(Image.open(p)) > 127 for p in d.glob("*.png") if only is None or p.stem == only]
    if not masks: continue
    truth = np.any(masks, 0)
    img = Image.open(r["image_path"]).convert("RGB")
    w, h = img.size; s = SIDE / min(w, h)
    img = img.resize((int(round(w*s/32))*32, int(round(h*s/32))*32), Image.BILINEAR)
    x = (torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 255 - mean) / std
    with torch.no_grad():
        f = m.forward_features(x[None])  # [1,1280,h,w] after conv_head+bn
        logits = torch.einsum("bchw,kc->bkhw", f, m.classifier.weight) + m.classifier.bias[None, :, None, None]
        p = logits.softmax(1)
        maps = {"norm": f[0].norm(dim=0), "cls_lse": torch.logsumexp(logits[0], 0),
                "cls_ent": (p[0] * p[0].clamp_min(1e-9).log()).sum(0)}
        fl = F.normalize(f[0].flatten(1), dim=0)
        fl = fl - fl.mean(1, keepdim=True)
        u, sv, vt = torch.linalg.svd(fl, full_matrices=False)
        pc = vt[0].view(f.shape[-2:])
        border = torch.zeros_like(pc, dtype=torch.bool); border[0] = border[-1] = True; border[:, 0] = border[:, -1] = True
        if pc[border].mean() > pc[~border].mean(): pc = -pc
        maps["pca_border"] = pc
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, f.shape[-2]), torch.linspace(-1, 1, f.shape[-1]), indexing="ij")
        maps["border_dist"] = -torch.maximum(yy.abs(), xx.abs())
        inter = m.forward_intermediates(x[None], intermediates_only=True)
        for i, t in enumerate(inter):
            maps[f"norm_l{i}_s{x.shape[-1] // t.shape[-1]}"] = t[0].norm(dim=0)
    for name, mp in maps.items():
        up = F.interpolate(mp[None, None].float(), size=truth.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
        res.setdefault(name, []).append(auc(up[::2, ::2].ravel(), truth[::2, ::2].ravel()))
    k += 1
    if k >= n: break
print(manifest, k, {n_: round(float(np.nanmean(v)), 3) for n_, v in res.items()})
