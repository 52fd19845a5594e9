"""Score what the studio's Demo model job made in a demo workspace (issue 16 item 1) on 200
held-out SynthBooru test scenes: Stage A alone (what the Playground segments with first) and
Stage A + the Stage B segmenter (once the job has ended).

    python docs/bench/session11/demo_model_score.py WORKSPACE
"""
import json
import sys
import time
from pathlib import Path

from gaudi_engine import synth
from gaudi_engine.bench.quality import score_predictor
from gaudi_engine.infer import Predictor
from gaudi_engine.train.data import read_manifest

ws = Path(sys.argv[1])
align = ws / "runs/align_s1/checkpoints/model.pt"
seg = ws / "runs/seg_s1/checkpoints/model.pt"
test = synth.generate(ws / "heldout_test", 200, seed=0, size=(128, 192), split="test")
recs = read_manifest(test["manifest"])
res = {}
for name, s in (("stage_a_cam", None), ("stage_a_plus_s1", seg if seg.exists() else None)):
    if name != "stage_a_cam" and s is None:
        continue
    t = time.time()
    r = score_predictor(Predictor(align, s), recs, ws / "heldout_test" / "gt")
    res[name] = {"miou": round(r["miou"], 4), "per_tag": {k: round(v, 3) for k, v in r["per_tag"].items()},
                 "seconds": round(time.time() - t, 1)}
print(json.dumps(res, indent=1))
