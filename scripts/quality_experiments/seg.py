import os
import json, sys, time, shutil
from pathlib import Path
import torch
torch.set_num_threads(2)
from gaudi_engine import synth
from gaudi_engine.pseudo.config import PseudoConfig
from gaudi_engine.pseudo.run import run_pseudolabels
from gaudi_engine.bench.quality import score_pseudomasks, score_predictor
from gaudi_engine.train.data import read_manifest
from gaudi_engine.train.segmenter import train_segmenter
from gaudi_engine.infer import Predictor
name,ck=sys.argv[1],sys.argv[2]; over=json.loads(sys.argv[3]) if len(sys.argv)>3 else {}
S=Path(os.environ.get('DEMO', '/tmp/demo600')) / 'demo_source'; O=Path(os.environ.get('EXP', '/tmp/exp') + '/s')/name
TE=Path(os.environ.get('EXP', '/tmp/exp') + '/test100')
if not (TE/'manifest.csv').exists(): synth.generate(TE, 100, seed=0, size=(128,192), split='test')
test=read_manifest(TE/'manifest.csv')
cfg=PseudoConfig(); seg_kw={}
segck=over.pop('segck',None); init=over.pop('init',None)
for k,v in over.items():
    if k.startswith('cam.'): setattr(cfg.cam,k[4:],v)
    elif k.startswith('val.'): setattr(cfg.validators,k[4:],v)
    elif k.startswith('seg.'): seg_kw[k[4:]]=v
    else: setattr(cfg,k,v)
t=time.time()
if not (O/'pseudo/index.parquet').exists():
    run_pseudolabels(S/'manifest.csv', S/'tag_descriptions.json', ck, O/'pseudo', config=cfg, segmenter_ckpt=segck)
tp=time.time()-t; r=score_pseudomasks(O/'pseudo', read_manifest(S/'manifest.csv'), S/'gt'); t=time.time()
shutil.rmtree(O/'seg',ignore_errors=True)
sm=train_segmenter(S/'manifest.csv', S/'tag_descriptions.json', O/'pseudo', O/'seg', seg_kw.pop('epochs', None), init_from=init or ck, device='cpu', log_every=1000, **seg_kw)
ts=time.time()-t
q=score_predictor(Predictor(ck, O/'seg/checkpoints/last.pt'), test, TE/'gt')
res={'name':name,'p_acc':round(r['miou_accepted'],3),'p_all':round(r['miou_all'],3),'n_acc':r['n_accepted'],'seg':round(q['miou'],3),'tp':round(tp),'ts':round(ts)}
print(json.dumps(res)); print('SEG',{t:round(v,2) for t,v in q['per_tag'].items()})
with open(os.environ.get('EXP', '/tmp/exp') + '/sresults.jsonl','a') as f: f.write(json.dumps(res)+'\n')
