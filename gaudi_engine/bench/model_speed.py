"""Model speed ratios of DESIGN §9, measured in one process so machine load hits both sides:

- infer: all tags of an image come from one backbone pass, so 10 tags should cost ≤ 1.3× 1 tag;
- train: a training-loop step (data + forward + backward + optimizer, as `train_loop` runs it)
  should cost ≤ 1.3× the bare forward+backward of the same model on an in-memory batch.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_infer(model_name: str = "gaudi-lite0", image_size: int = 160, repeats: int = 10) -> dict[str, Any]:
    """Time Predictor.predict (segmenter mode) for 1 vs 10 tags on a 192 px SynthBooru scene."""
    import torch

    from ..infer import Predictor
    from ..models.checkpoint import save_checkpoint
    from ..models.registry import create_align_model
    from ..models.segmenter import TextSegmenter, segmenter_payload
    from ..synth import SYNTH_TAGS, TAG_DESCRIPTIONS, render_scene
    from ..train.align import align_payload

    torch.manual_seed(0)
    tags = list(SYNTH_TAGS)[:10]
    align = create_align_model(model_name, image_size=image_size).eval()
    descriptions = {t: list(TAG_DESCRIPTIONS[t]) for t in tags}
    base = align_payload(align, tags, descriptions)
    seg = TextSegmenter(align).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(Path(tmp) / "seg.pt", segmenter_payload(seg, base))
        predictor = Predictor(segmenter_ckpt=ckpt, device="cpu")
        image = render_scene(0, 192)[0]
        t1 = _median_time(lambda: predictor.predict(image, tags[:1]), repeats)
        t10 = _median_time(lambda: predictor.predict(image, tags), repeats)
    return {"model": model_name, "image_size": image_size, "threads": torch.get_num_threads(),
            "infer_1_tag_s": round(t1, 4), "infer_10_tags_s": round(t10, 4),
            "ratio_10_vs_1": round(t10 / t1, 3), "target_ratio": 1.3}


def bench_train_step(model_name: str = "gaudi-lite0", image_size: int = 160, batch_size: int = 16,
                     steps: int = 12, n_images: int = 160) -> dict[str, Any]:
    """Median loop step (from the run's metrics.jsonl) vs median bare forward+backward of the
    same model and loss on one fixed batch, measured right after the run in the same process."""
    import json

    import torch

    from ..models.checkpoint import load_align
    from ..synth import generate
    from ..train.align import _pretokenize, make_align_loss, train_align
    from ..train.data import TagImageDataset, build_vocab, load_tag_descriptions, read_manifest

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        generate(data, n=n_images, seed=0, size=(128, 192))
        out = Path(tmp) / "run"
        manifest, tag_desc = data / "manifest.csv", data / "tag_descriptions.json"
        train_align(manifest, tag_desc, out, model_name=model_name, image_size=image_size, epochs=1,
                    batch_size=batch_size, max_steps=steps, device="cpu", log_every=1)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"step_time"' in line]
        loop_steps = [r["step_time"] + r["data_time"] for r in rows[2:]] or [r["step_time"] + r["data_time"] for r in rows]

        # the bare side: the trained model, the same loss, one batch already in memory
        model = load_align(out / "checkpoints" / "last.pt").model.train()
        model.to(memory_format=torch.channels_last)
        records = read_manifest(manifest)
        descriptions = load_tag_descriptions(tag_desc)
        vocab = build_vocab(records)
        dataset = TagImageDataset(records, vocab, model.preprocess_cfg, train=True, seed=0)
        batch = torch.utils.data.default_collate([dataset[i] for i in range(batch_size)])
        batch = {k: (v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.dim() == 4 else v)
                 for k, v in batch.items()}
        tokens, owner = _pretokenize(model, descriptions, vocab)
        loss_fn = make_align_loss(tokens, owner, len(vocab))

        def fwd_bwd() -> None:
            model.zero_grad(set_to_none=True)
            loss, _ = loss_fn(model, batch)
            loss.backward()

        bare = _median_time(fwd_bwd, repeats=max(4, steps - 2), warmup=1)
    loop = statistics.median(loop_steps)
    return {"model": model_name, "image_size": image_size, "batch_size": batch_size,
            "threads": torch.get_num_threads(), "median_loop_step_s": round(loop, 3),
            "median_bare_fwd_bwd_s": round(bare, 3), "ratio": round(loop / bare, 3), "target_ratio": 1.3}
