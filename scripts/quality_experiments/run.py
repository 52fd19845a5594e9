import json, sys, time, os
from pathlib import Path
import torch
torch.set_num_threads(2)
from gaudi_engine.train import align as A
from gaudi_engine.pseudo.config import PseudoConfig
from gaudi_engine.pseudo.run import run_pseudolabels
from gaudi_engine.bench.quality import score_pseudomasks
from gaudi_engine.train.data import read_manifest
name=sys.argv[1]; over=json.loads(sys.argv[2]) if len(sys.argv)>2 else {}
epochs=over.pop('epochs',8); n_eval=over.pop('n_eval',150)
A.DEFAULTS.update(over)
S=Path(os.environ.get('DEMO', '/tmp/demo600')) / 'demo_source'; O=Path(os.environ.get('EXP', '/tmp/exp'))/name
t=time.time()
if not (O/'align/checkpoints/last.pt').exists():
    A.train_align(S/'manifest.csv', S/'tag_descriptions.json', O/'align', epochs=epochs, device='cpu', log_every=1000)
ta=time.time()-t; t=time.time()
import shutil; shutil.rmtree(O/'pseudo', ignore_errors=True)
run_pseudolabels(S/'manifest.csv', S/'tag_descriptions.json', O/'align/checkpoints/last.pt', O/'pseudo', limit=n_eval)
tp=time.time()-t
r=score_pseudomasks(O/'pseudo', read_manifest(S/'manifest.csv'), S/'gt')
res={'name':name,'over':over,'epochs':epochs,'acc':round(r['miou_accepted'],3),'all':round(r['miou_all'],3),'n_acc':r['n_accepted'],'n':r['n_masks'],'t_align':round(ta),'t_pseudo':round(tp),
     'acc_rej':round(r['accepted_over_rejected'],2)}
print(json.dumps(res)); print({t:round(v,2) for t,v in r['per_tag_accepted'].items()})
with open(os.environ.get('EXP', '/tmp/exp') + '/results.jsonl','a') as f: f.write(json.dumps(res)+'\n')
