# Score segmenters of a demo workspace with raw maps, flip, and superpixel averaging.
# usage: python scripts/quality_experiments/infer_regions.py /tmp/demo600f seg_s2,seg_oracle
import sys, json, numpy as np, torch, torch.nn.functional as F
from pathlib import Path
from gaudi_engine.bench.quality import score_predictor
from gaudi_engine.infer import Predictor
from gaudi_engine.train.data import read_manifest
from gaudi_engine.pseudo.cam import prepare_image
from gaudi_engine.pseudo.regions import region_score_map, superpixels
W=Path(sys.argv[1]); align=W/'runs/align_s1/checkpoints/last.pt'
recs=read_manifest(W/'heldout_test/manifest.csv'); gt=W/'heldout_test/gt'
def make(flip, regions):
    @torch.no_grad()
    def probs(self, image, tags):
        w,h=image.size
        x=prepare_image(image,self.preprocess).to(self.device).unsqueeze(0)
        t=self.texts.get(tags)
        lg=self.segmenter(x,t)
        if flip: lg=(lg+self.segmenter(x.flip(-1),t).flip(-1))/2
        p=torch.sigmoid(F.interpolate(lg.float(),size=(h,w),mode='bilinear',align_corners=False))[0].cpu().numpy()
        if regions:
            lab=superpixels(np.asarray(image.convert('RGB')),regions)
            p=np.stack([region_score_map(m,lab) for m in p])
        return p
    return probs
for name in sys.argv[2].split(','):
    seg=W/f'runs/{name}/checkpoints/last.pt'
    for flip,reg in ((False,None),(True,None),(False,'felzenszwalb'),(True,'felzenszwalb'),(False,'slic')):
        Predictor.probabilities=make(flip,reg)
        r=score_predictor(Predictor(align,seg),recs,gt)
        print(name,'flip' if flip else '-',reg,round(r['miou'],4),flush=True)
