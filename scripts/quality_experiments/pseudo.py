import os
import json, sys, time, shutil
from pathlib import Path
import torch
from gaudi_engine.pseudo.config import PseudoConfig
from gaudi_engine.pseudo.run import run_pseudolabels
from gaudi_engine.bench.quality import score_pseudomasks
from gaudi_engine.train.data import read_manifest
from gaudi_engine.metrics import IoUAccumulator
name,ck=sys.argv[1],sys.argv[2]; over=json.loads(sys.argv[3]) if len(sys.argv)>3 else {}
S=Path(os.environ.get('DEMO', '/tmp/demo600')) / 'demo_source'; O=Path(os.environ.get('EXP', '/tmp/exp') + '/p')/name
shutil.rmtree(O,ignore_errors=True); O.mkdir(parents=True)
cfg=PseudoConfig(); segck=over.pop('segck',None)
if 'nests' in over: (O/'nesting.json').write_text(json.dumps({'pairs':over.pop('nests')}))
for k,v in over.items():
    if k.startswith('cam.'): setattr(cfg.cam,k[4:],v)
    elif k.startswith('val.'): setattr(cfg.validators,k[4:],v)
    else: setattr(cfg,k,v)
t=time.time()
run_pseudolabels(S/'manifest.csv', S/'tag_descriptions.json', ck, O, limit=150, config=cfg, segmenter_ckpt=segck)
r=score_pseudomasks(O, read_manifest(S/'manifest.csv'), S/'gt')
res={'name':name,'acc':round(r['miou_accepted'],3),'all':round(r['miou_all'],3),'n_acc':r['n_accepted'],'acc_rej':round(r['accepted_over_rejected'],2),'t':round(time.time()-t)}
print(json.dumps(res)); print('ACC',{t:round(v,2) for t,v in r['per_tag_accepted'].items()}); print('ALL',{t:round(v,2) for t,v in r['per_tag_all'].items()}); import collections; df=__import__('pandas').read_parquet(O/'index.parquet'); print(df.groupby('tag').accepted.mean().round(2).to_dict()); print(collections.Counter(','.join(df.reason).split(',')))
with open(os.environ.get('EXP', '/tmp/exp') + '/presults.jsonl','a') as f: f.write(json.dumps(res)+'\n')
