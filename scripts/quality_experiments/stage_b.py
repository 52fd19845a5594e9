"""s1 only: train Stage B on $DEMO's v1 masks with SegTargetsConfig overrides, score on the 200 held-out scenes."""
import json, os, sys, time
from pathlib import Path
import torch
from gaudi_engine.bench.quality import score_predictor
from gaudi_engine.infer import Predictor
from gaudi_engine.train.data import read_manifest
from gaudi_engine.train.segmenter import train_segmenter, SegTargetsConfig
name = sys.argv[1]; over = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
W = Path(os.environ.get('DEMO', '/tmp/demo600')); O = Path(os.environ.get('EXP', '/tmp/exp') + '/s1') / name
gt = over.pop('gt', False)
t = time.time()
s = train_segmenter(W/'demo_source/manifest.csv', W/'demo_source/tag_descriptions.json', None if gt else W/'runs/pseudomasks_v1', O,
                    init_from=W/'runs/align_s1/checkpoints/last.pt', gt_masks=W/'demo_source/gt' if gt else None,
                    device='cpu', log_every=1000, targets_cfg=SegTargetsConfig(**over))
ts = time.time() - t
recs = read_manifest(W/'heldout_test/manifest.csv')
q = score_predictor(Predictor(W/'runs/align_s1/checkpoints/last.pt', O/'checkpoints/last.pt'), recs, W/'heldout_test/gt')
res = {'name': name, 'over': over, 'gt': gt, 'miou': round(q['miou'], 4), 'ts': round(ts), 'per_tag': {k: round(v, 3) for k, v in q['per_tag'].items()}}
print(json.dumps(res))
with open(os.environ.get('EXP', '/tmp/exp') + '/s1results.jsonl', 'a') as f: f.write(json.dumps(res) + '\n')
