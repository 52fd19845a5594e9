"""`gaudi bench quality|speed`: print a table and write bench.json."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import GaudiError

SPEED_PARTS = ("ingest", "catalogue", "download", "infer", "train")


def _write(out: Path, kind: str, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[kind] = {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **results}
    out.write_text(json.dumps(existing, indent=2, default=str))
    print(f"wrote {out}")


def _speed(args: argparse.Namespace) -> int:
    parts = [p.strip() for p in args.only.split(",")] if args.only else list(SPEED_PARTS)
    unknown = sorted(set(parts) - set(SPEED_PARTS))
    if unknown:
        raise GaudiError(f"unknown speed benchmark(s): {', '.join(unknown)} (choose from {', '.join(SPEED_PARTS)})")
    results: dict = {}
    for part in parts:
        if part == "ingest":
            from ..bench.ingest import bench_ingest
            results["ingest"] = bench_ingest(n_posts=args.ingest_posts)
        elif part == "catalogue":
            from ..bench.ingest import bench_catalogue_scale
            results["catalogue"] = bench_catalogue_scale(n_posts=args.catalogue_posts)
        elif part == "download":
            from ..bench.download import bench_download
            results["download"] = bench_download(n_images=args.download_images, workers=args.max_workers)
        elif part == "infer":
            from ..bench.model_speed import bench_infer
            results["infer"] = bench_infer(model_name=args.model, image_size=args.image_size)
        elif part == "train":
            from ..bench.model_speed import bench_train_step
            results["train"] = bench_train_step(model_name=args.model, image_size=args.image_size,
                                                batch_size=args.batch_size)
        print(f"## {part}")
        for k, v in results[part].items():
            print(f"  {k}: {v}")
    _write(Path(args.out), "speed", results)
    return 0


def _quality(args: argparse.Namespace) -> int:
    from ..bench.quality import run_quality_bench

    results = run_quality_bench(
        work_dir=Path(args.work_dir), n_train=args.n_train, n_test=args.n_test,
        size=tuple(args.size), align_epochs=args.align_epochs, seg_epochs=args.seg_epochs,
        model=args.model, image_size=args.image_size, seed=args.seed,
        ablations=not args.no_ablations, ablation_n=args.ablation_n or None, device=args.device,
        batch_size=args.batch_size, align_ckpt=args.align_ckpt,
    )
    _write(Path(args.out), "quality", results)
    return 0


def register(add_command) -> None:
    def _usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p = add_command("bench", "quality and speed benchmarks (print a table, write bench.json)", _usage)
    sub = p.add_subparsers(dest="bench_kind", metavar="KIND")

    q = add_command("quality", "the whole pipeline on SynthBooru: CAM, pseudo v1/v2, segmenter s1/s2, oracle",
                    _quality, subparsers=sub)
    q.add_argument("--work-dir", default="bench_quality", help="where the benchmark's data and runs go")
    q.add_argument("--n-train", type=int, default=600)
    q.add_argument("--n-test", type=int, default=200)
    q.add_argument("--size", type=int, nargs=2, default=[128, 192], metavar=("MIN", "MAX"))
    q.add_argument("--model", default="gaudi-lite0")
    q.add_argument("--image-size", type=int, default=128)
    q.add_argument("--align-epochs", type=int, default=14, help="Stage A epochs")
    q.add_argument("--seg-epochs", type=int, default=10, help="Stage B epochs (the oracle gets the same)")
    q.add_argument("--batch-size", type=int, default=32)
    q.add_argument("--device", default="cpu")
    q.add_argument("--align-ckpt", help="reuse a Stage A checkpoint trained on this benchmark's train split")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--no-ablations", action="store_true", help="skip the ablation rows (faster)")
    q.add_argument("--ablation-n", type=int, default=150, help="ablations on the first N train posts (0 = all)")
    q.add_argument("--out", default="bench.json")

    s = add_command("speed", "sync ingest, catalogue at scale, downloads, inference and train-step ratios",
                    _speed, subparsers=sub)
    s.add_argument("--only", help=f"comma-separated subset of {','.join(SPEED_PARTS)}")
    s.add_argument("--ingest-posts", type=int, default=20000)
    s.add_argument("--catalogue-posts", type=int, default=1_000_000)
    s.add_argument("--download-images", type=int, default=400)
    s.add_argument("--max-workers", type=int, default=8)
    s.add_argument("--model", default="gaudi-lite0")
    s.add_argument("--image-size", type=int, default=160)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--out", default="bench.json")
