"""Round 2 only: pseudo v2 from $DEMO's s1 with PseudoConfig overrides, s2 (5 epochs on from s1), scored on the 200 held-out scenes."""
import json, os, sys, time, shutil
from pathlib import Path
from gaudi_engine.bench.quality import score_predictor, score_pseudomasks
from gaudi_engine.infer import Predictor
from gaudi_engine.pseudo.config import PseudoConfig
from gaudi_engine.pseudo.run import run_pseudolabels
from gaudi_engine.train.data import read_manifest
from gaudi_engine.train.segmenter import train_segmenter
name = sys.argv[1]; over = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
W = Path(os.environ.get('DEMO', '/tmp/demo600')); O = Path(os.environ.get('EXP', '/tmp/exp') + '/r2') / name; shutil.rmtree(O, ignore_errors=True)
S = W / 'demo_source'; A = W / 'runs/align_s1/checkpoints/last.pt'; S1 = Path(os.environ.get('S1', W / 'runs/seg_s1/checkpoints/last.pt'))
cfg = PseudoConfig()
for k, v in over.items(): setattr(cfg, k, v)
t = time.time()
run_pseudolabels(S/'manifest.csv', S/'tag_descriptions.json', A, O/'v2', segmenter_ckpt=S1, config=cfg)
pv = score_pseudomasks(O/'v2', read_manifest(S/'manifest.csv'), S/'gt')
train_segmenter(S/'manifest.csv', S/'tag_descriptions.json', O/'v2', O/'s2', init_from=S1, device='cpu', log_every=1000)
recs = read_manifest(W/'heldout_test/manifest.csv')
q = score_predictor(Predictor(A, O/'s2/checkpoints/last.pt'), recs, W/'heldout_test/gt')
res = {'name': name, 'over': over, 'v2_acc': round(pv['miou_accepted'], 4), 'v2_all': round(pv['miou_all'], 4), 's2': round(q['miou'], 4), 't': round(time.time() - t), 'per_tag': {k: round(v, 3) for k, v in q['per_tag'].items()}}
print(json.dumps(res))
with open(os.environ.get('EXP', '/tmp/exp') + '/r2results.jsonl', 'a') as f: f.write(json.dumps(res) + '\n')
