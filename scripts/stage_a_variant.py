"""Train a Stage A variant for an experiment: `python scripts/stage_a_variant.py MANIFEST DESC OUT
'{"align_cfg": {"pool": "lse", "lse_r": 10}, "image_size": 128, "epochs": 14}'` (JSON overrides of
`train.align.DEFAULTS` and the call's keywords). Used for the ablations in BENCHMARKS.md."""
import json
import sys

from gaudi_engine.train import align

manifest, desc, out, overrides = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4] if len(sys.argv) > 4 else "{}")
kw = {k: overrides.pop(k) for k in ("image_size", "epochs", "batch_size", "lr", "seed", "model_name") if k in overrides}
align.DEFAULTS.update(overrides)
print(align.train_align(manifest, desc, out, device="cpu", **kw))
