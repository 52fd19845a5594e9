"""Score the demo-size pipeline (/tmp/demo600, every command's defaults) on a held-out SynthBooru
test split, next to an oracle: the same segmenter and epochs trained on the ground-truth masks."""
import json, time, sys
from pathlib import Path
from gaudi_engine import synth
from gaudi_engine.bench.quality import score_predictor
from gaudi_engine.infer import Predictor
from gaudi_engine.train.data import read_manifest
from gaudi_engine.train.segmenter import train_segmenter

W = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/demo600")
align = W / "runs/align_s1/checkpoints/last.pt"
t = time.time()
orc = train_segmenter(W / "demo_source/manifest.csv", W / "demo_source/tag_descriptions.json", None,
                      W / "runs/seg_oracle", None, init_from=align, gt_masks=W / "demo_source/gt", device="cpu")
t_orc = time.time() - t
test = synth.generate(W / "heldout_test", 200, seed=0, size=(128, 192), split="test")
recs = read_manifest(test["manifest"])
gt = W / "heldout_test" / "gt"
res = {"oracle_train_s": round(t_orc, 1)}
for name, seg in (("cam_only", None), ("s1", W / "runs/seg_s1/checkpoints/last.pt"),
                  ("s2", W / "runs/seg_s2/checkpoints/last.pt"), ("oracle", Path(orc["checkpoint"]))):
    res[name] = round(score_predictor(Predictor(align, seg), recs, gt)["miou"], 4)
res["s2_over_oracle"] = round(res["s2"] / res["oracle"], 3)
print(json.dumps(res))
