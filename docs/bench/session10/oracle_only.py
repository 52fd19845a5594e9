"""The bench's oracle row alone (same call as bench.quality.run_quality_bench): the segmenter on
train/gt masks, seg_epochs x n_train / n_gt epochs, initialised from the Stage A checkpoint."""
import json, sys, time
from pathlib import Path
from gaudi_engine.bench.datasets import folder_data
from gaudi_engine.bench.quality import score_predictor
from gaudi_engine.infer import Predictor
from gaudi_engine.train.data import read_manifest
from gaudi_engine.train.segmenter import train_segmenter
dataset, work, align_ckpt, limit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
data = folder_data(dataset, work, limit, 0)
train_recs, test_recs = read_manifest(data.train_manifest), read_manifest(data.test_manifest)
n_orc = len(read_manifest(data.oracle_manifest))
epochs = max(10, int(round(10 * len(train_recs) / n_orc)))
t = time.time()
orc = train_segmenter(data.oracle_manifest, data.descriptions, None, work / "seg_oracle", epochs,
                      init_from=align_ckpt, gt_masks=data.train_gt, device="cpu", batch_size=32, seed=0)
dt = time.time() - t
score = score_predictor(Predictor(align_ckpt, orc["checkpoint"], device="cpu"), test_recs, data.test_gt)
out = {"n_oracle": n_orc, "epochs": epochs, "train_s": dt, "miou": score["miou"], "per_tag": score["per_tag"]}
print(json.dumps(out, indent=1))
(work / "oracle.json").write_text(json.dumps(out, indent=1))
