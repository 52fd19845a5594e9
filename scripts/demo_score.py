"""Score the demo-size pipeline (scripts/demo_pipeline.sh, every command's defaults) on a held-out
SynthBooru test split, next to an oracle: the same segmenter and epochs trained on the
ground-truth masks. Also scores both rounds' pseudo-masks against the train scenes' ground truth
(read here only) and reports what the validators are worth."""
import json, time, sys
from pathlib import Path
from gaudi_engine import synth
from gaudi_engine.bench.quality import score_predictor, score_pseudomasks
from gaudi_engine.infer import Predictor
from gaudi_engine.train.data import read_manifest
from gaudi_engine.train.segmenter import train_segmenter

W = Path(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "/tmp/demo600")
align = W / "runs/align_s1/checkpoints/model.pt"
src = W / "demo_source"
res = {}
train_recs = read_manifest(src / "manifest.csv")
for v in ("v1", "v2"):
    p = score_pseudomasks(W / f"runs/pseudomasks_{v}", train_recs, src / "gt")
    res[f"pseudo_{v}"] = {k: p[k] for k in ("miou_accepted", "miou_all", "n_accepted", "n_masks", "mean_iou_accepted",
                                           "mean_iou_rejected", "accepted_over_rejected", "best_validator",
                                           "best_spearman")}
t = time.time()
orc_ckpt = W / "runs/seg_oracle/checkpoints/model.pt"
if "--reuse-oracle" in sys.argv and orc_ckpt.exists():  # same Stage A: the same oracle (deterministic)
    orc = {"checkpoint": orc_ckpt}
else:
    orc = train_segmenter(src / "manifest.csv", src / "tag_descriptions.json", None,
                          W / "runs/seg_oracle", None, init_from=align, gt_masks=src / "gt", device="cpu")
res["oracle_train_s"] = round(time.time() - t, 1)
test = synth.generate(W / "heldout_test", 200, seed=0, size=(128, 192), split="test")
recs = read_manifest(test["manifest"])
gt = W / "heldout_test" / "gt"
per_tag = {}
for name, seg in (("cam_only", None), ("s1", W / "runs/seg_s1/checkpoints/model.pt"),
                  ("s2", W / "runs/seg_s2/checkpoints/model.pt"), ("oracle", Path(orc["checkpoint"]))):
    r = score_predictor(Predictor(align, seg), recs, gt)
    res[name] = round(r["miou"], 4)
    per_tag[name] = {k: round(v, 3) for k, v in r["per_tag"].items()}
res["s2_over_oracle"] = round(res["s2"] / res["oracle"], 3)
res["s2_minus_s1"] = round(res["s2"] - res["s1"], 4)
res["per_tag"] = per_tag
print(json.dumps(res, indent=1, default=float))
