"""What gaudi-lite2 costs against gaudi-lite0, measured in one process so that the machine's load
falls on both alike: parameters, Stage A's forward+backward (train_align's loss, train mode,
channels_last as train_loop runs it), the trunk's forward+backward through every level (what
Stage B's decoder reads) and the eval dense forward (pseudo-labelling / infer) on one batch, timed in interleaved rounds whose order rotates, and the size of each one's model.pt.
`OMP_NUM_THREADS=1 python scripts/lite_trunk_cost.py [--batch 8] [--height 192] [--width 128]
[--rounds 10]`; prints one JSON object (used for BENCHMARKS.md)."""
import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gaudi_engine import synth
from gaudi_engine.models.checkpoint import save_checkpoint
from gaudi_engine.models.registry import create_align_model
from gaudi_engine.train.align import DEFAULTS, _pretokenize, align_payload, make_align_loss

MODELS = ["gaudi-lite0", "gaudi-lite2"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    vocab, descs = list(synth.SYNTH_TAGS), synth.TAG_DESCRIPTIONS
    x = torch.randn(args.batch, 3, args.height, args.width).contiguous(memory_format=torch.channels_last)
    batch = {"image": x, "labels": (torch.rand(args.batch, len(vocab)) < 0.3).float()}
    models, losses, out = {}, {}, {"threads": torch.get_num_threads(), "load_avg_start": os.getloadavg(),
                                   "batch": list(x.shape), "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            m = create_align_model(name)  # the config's 128-px input
            size = save_checkpoint(Path(tmp) / f"{name}.pt", align_payload(m, vocab, descs)).stat().st_size
            trunk = sum(p.numel() for p in m.clip.visual.trunk.parameters())
            out[name] = {"params_total": sum(p.numel() for p in m.parameters()), "params_trunk": trunk,
                         "model_pt_bytes": size}
            models[name] = m.train().to(memory_format=torch.channels_last)
            tokens, owner = _pretokenize(m, descs, vocab)
            losses[name] = make_align_loss(tokens, owner, len(vocab), bg_weight=DEFAULTS["bg_weight"],
                                           max_tags_per_step=DEFAULTS["max_tags_per_step"],
                                           rank_weight=DEFAULTS["rank_weight"], excl_weight=DEFAULTS["excl_weight"],
                                           excl_pool=DEFAULTS["excl_pool"])

    def fwd_bwd(name: str) -> None:
        models[name].train().zero_grad(set_to_none=True)
        loss, _ = losses[name](models[name], batch)
        loss.backward()

    def trunk_fwd_bwd(name: str) -> None:  # every level, as Stage B's segmenter decodes them
        m = models[name].train()
        m.zero_grad(set_to_none=True)
        sum(f.float().square().mean() for f in m.trunk_features(x)).backward()

    def dense_eval(name: str) -> None:
        with torch.no_grad():
            models[name].eval().dense_features(x)

    for what, fn in (("fwd_bwd_s", fwd_bwd), ("trunk_fwd_bwd_s", trunk_fwd_bwd), ("eval_dense_s", dense_eval)):
        times = {n: [] for n in MODELS}
        for r in range(args.rounds + 1):  # round 0 warms up
            for n in MODELS[r % 2:] + MODELS[:r % 2]:
                t = time.perf_counter()
                fn(n)
                if r:
                    times[n].append(time.perf_counter() - t)
        for n in MODELS:
            out[n][what] = round(statistics.median(times[n]), 4)
        ratios = [b / a for a, b in zip(times[MODELS[0]], times[MODELS[1]])]
        out[f"ratio_{what}"] = {"median": round(statistics.median(ratios), 3),
                                "min": round(min(ratios), 3), "max": round(max(ratios), 3)}
    out["ratio_params_trunk"] = round(out[MODELS[1]]["params_trunk"] / out[MODELS[0]]["params_trunk"], 3)
    out["ratio_model_pt"] = round(out[MODELS[1]]["model_pt_bytes"] / out[MODELS[0]]["model_pt_bytes"], 3)
    out["load_avg_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
