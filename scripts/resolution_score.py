"""Issue 14's resolution check, as a user meets it: held-out SynthBooru test scenes at their own
size (192-px squares, as in the issue), upscaled to 1024 and 3072 px (long side, JPEG q95, as Danbooru serves
originals) and letterboxed into 2:3 portraits (neutral grey bars); batch `gaudi infer` on each
folder (a subprocess per variant, so its time is what a user waits for), scored against the
ground truth moved the same way, inside the scene.

    python scripts/resolution_score.py WORKSPACE [N_SCENES]
WORKSPACE: a finished scripts/demo_pipeline.sh run (its align and seg_s2 checkpoints).
Writes WORKSPACE/resolution/score.json.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gaudi_engine import rle, synth
from gaudi_engine.metrics import IoUAccumulator
from gaudi_engine.train.data import read_manifest

W = Path(sys.argv[1])
N = int(sys.argv[2]) if len(sys.argv) > 2 else 24
ckpts = W / "runs"
align = next(p for p in (ckpts / "align_s1/checkpoints/model.pt", ckpts / "align_s1/checkpoints/last.pt") if p.exists())
seg = next((p for p in (ckpts / "seg_s2/checkpoints/model.pt", ckpts / "seg_s2/checkpoints/last.pt") if p.exists()),
           None)  # without one: the CAM path
out = W / "resolution"
test = synth.generate(out / "scenes", N, seed=7, size=(192, 192), split="test")  # 192-px squares
recs = read_manifest(test["manifest"])


def place(im: Image.Image, variant: str, resample) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The scene as the variant shows it, and where the scene lies (x0, y0, w, h)."""
    w, h = im.size
    if variant == "native":
        return im, (0, 0, w, h)
    if variant == "2:3":
        pw = max(w, round(h * 2 / 3))
        ph = round(pw * 3 / 2)
        fill = (128, 128, 128) if im.mode == "RGB" else 0
        canvas = Image.new(im.mode, (pw, ph), fill)
        canvas.paste(im, ((pw - w) // 2, (ph - h) // 2))
        return canvas, ((pw - w) // 2, (ph - h) // 2, w, h)
    side = int(variant)
    s = side / max(w, h)
    big = im.resize((round(w * s), round(h * s)), resample)
    return big, (0, 0, big.width, big.height)


results = {}
for variant in ("native", "1024", "3072", "2:3"):
    d = out / variant.replace(":", "x")
    d.mkdir(parents=True, exist_ok=True)
    boxes = {}
    for r in recs:
        im = Image.open(r["image_path"]).convert("RGB")
        pic, box = place(im, variant, Image.BICUBIC)
        name = r["image_path"].stem
        pic.save(d / (f"{name}.jpg" if variant in ("1024", "3072") else f"{name}.png"), quality=95)
        (d / f"{name}.txt").write_text(", ".join(r["tags"]))
        boxes[name] = box
    preds = d / "_preds"
    t = time.time()
    subprocess.run([sys.executable, "-m", "gaudi_engine", "infer", "--images", str(d), "--out-dir", str(preds),
                    "--align-ckpt", str(align)] + (["--segmenter-ckpt", str(seg)] if seg else []), check=True,
                   stdout=subprocess.DEVNULL)
    secs = time.time() - t
    acc = IoUAccumulator()
    for r in recs:
        name = r["image_path"].stem
        res = json.loads((preds / f"{name}.json").read_text())
        x0, y0, w, h = boxes[name]
        for t_ in res["tags"]:
            gt_file = Path(test["out_dir"]) / "gt" / name / f"{t_['tag']}.png"
            if not gt_file.exists():
                continue
            gt_im = Image.open(gt_file).convert("L")
            gt, _ = place(gt_im, variant, Image.NEAREST)
            gt = np.asarray(gt)[y0:y0 + h, x0:x0 + w] > 127
            m = rle.decode(t_["mask"])[y0:y0 + h, x0:x0 + w]
            acc.add(t_["tag"], m, gt)
    results[variant] = {"miou": round(acc.miou(), 4), "per_tag": {k: round(v, 3) for k, v in acc.per_tag().items()},
                        "infer_s": round(secs, 1), "images": len(recs)}
    print(variant, results[variant]["miou"], f"{secs:.1f} s", flush=True)
base = results["native"]["miou"]
for v in ("1024", "3072", "2:3"):
    results[v]["over_native"] = round(results[v]["miou"] / base, 3) if base else None
(out / "score.json").write_text(json.dumps(results, indent=1))
print(json.dumps({v: {k: r[k] for k in ("miou", "infer_s") if k in r} | ({"over_native": r["over_native"]}
                                                                         if "over_native" in r else {})
                  for v, r in results.items()}, indent=1))
