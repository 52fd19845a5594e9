"""`gaudi bench quality|speed`: print a table and write bench.json."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import GaudiError

SPEED_PARTS = ("ingest", "catalogue", "download", "infer_cold", "infer", "infer_batch", "pseudo", "train")
# (default, --quick) of the speed options; an option given on the command line wins over both
SPEED_SIZES = {"ingest_posts": (20000, 5000), "catalogue_posts": (1_000_000, 100_000), "download_images": (400, 100),
               "repeats": (4, 2), "cold_repeats": (3, 1), "batch_images": (4, 2), "batch_rounds": (2, 1),
               "pseudo_images": (8, 4), "train_images": (32, 32), "train_steps": (6, 4)}


def _write(out: Path, kind: str, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[kind] = {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **results}
    out.write_text(json.dumps(existing, indent=2, default=str))
    print(f"wrote {out}")


def _speed(args: argparse.Namespace) -> int:
    import os
    import platform

    from ..bench.model_speed import MODEL_PARTS, format_rows, load_avg, run_model_parts, speed_table, threads

    parts = [p.strip() for p in args.only.split(",")] if args.only else list(SPEED_PARTS)
    unknown = sorted(set(parts) - set(SPEED_PARTS))
    if unknown:
        raise GaudiError(f"unknown speed benchmark(s): {', '.join(unknown)} (choose from {', '.join(SPEED_PARTS)})")
    for k, (default, quick) in SPEED_SIZES.items():
        if getattr(args, k) is None:
            setattr(args, k, quick if args.quick else default)
    if args.threads:  # this process and the `gaudi infer` children alike
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    t0, la0 = time.perf_counter(), load_avg()
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
        else:
            continue
        print(f"## {part}")
        for k, v in results[part].items():
            print(f"  {k}: {v}")

    def show(part: str, res: dict) -> None:
        print(f"## {part}")
        print("\n".join(format_rows(part, res)), flush=True)

    model_parts = [p for p in MODEL_PARTS if p in parts]
    if model_parts:
        results.update(run_model_parts(
            model_parts, model_name=args.model, image_size=args.image_size, work_dir=args.work_dir,
            big=tuple(args.big), mid=tuple(args.mid), small=tuple(args.small), train_side=args.train_side,
            repeats=args.repeats, cold_repeats=args.cold_repeats, batch_images=args.batch_images,
            batch_rounds=args.batch_rounds, pseudo_images=args.pseudo_images, train_images=args.train_images,
            train_steps=args.train_steps, batch_size=args.batch_size, on_part=show))
    import torch

    results["context"] = {"threads": threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                          "cpu_count": os.cpu_count(), "load_avg_start": la0, "load_avg_end": load_avg(),
                          "seconds": round(time.perf_counter() - t0, 1), "python": platform.python_version(),
                          "torch": torch.__version__, "quick": bool(args.quick),
                          "note": "ratios are measured inside this one run; absolute times are context"}
    if model_parts:
        c = results["context"]
        print()
        print(speed_table(results))
        print(f"{len(parts)} part(s) in {c['seconds']} s; {c['threads']} torch threads on {c['cpu_count']} CPUs; "
              f"load avg (1, 5, 15 min) {c['load_avg_start']} at start, {c['load_avg_end']} at end")
    _write(Path(args.out), "speed", results)
    return 0


def _quality(args: argparse.Namespace) -> int:
    from ..bench.quality import run_quality_bench

    results = run_quality_bench(
        work_dir=Path(args.work_dir), n_train=args.n_train, n_test=args.n_test,
        size=tuple(args.size), align_epochs=args.align_epochs, seg_epochs=args.seg_epochs,
        model=args.model, image_size=args.image_size, seed=args.seed,
        ablations=not args.no_ablations, ablation_n=args.ablation_n or None, device=args.device,
        batch_size=args.batch_size, align_ckpt=args.align_ckpt, dataset=args.dataset,
        train_limit=args.train_limit or None,
    )
    _write(Path(args.out), "quality", results)
    return 0


def register(add_command) -> None:
    def _usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p = add_command("bench", "quality and speed benchmarks (print a table, write bench.json)", _usage)
    sub = p.add_subparsers(dest="bench_kind", metavar="KIND")

    q = add_command("quality", "the whole pipeline on SynthBooru or a dataset folder: CAM, pseudo v1/v2 and their "
                    "validators, segmenter s1/s2, oracle, per-tag IoU, ablations", _quality, subparsers=sub)
    q.add_argument("--work-dir", default="bench_quality", help="where the benchmark's data and runs go")
    q.add_argument("--dataset", metavar="DIR",
                   help="a folder in the layout of ccp-dev (train/images + NAME.txt tags, optional train/gt, "
                        "test/images, test/gt/NAME/<tag>.png, tag_descriptions.json); default: SynthBooru")
    q.add_argument("--train-limit", type=int, metavar="N",
                   help="with --dataset: a random (seeded) sample of N train images; default all")
    q.add_argument("--n-train", type=int, default=600, help="SynthBooru train scenes")
    q.add_argument("--n-test", type=int, default=200, help="SynthBooru test scenes")
    q.add_argument("--size", type=int, nargs=2, default=[128, 192], metavar=("MIN", "MAX"),
                   help="SynthBooru scene sides")
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

    s = add_command("speed", "sync ingest, catalogue at scale, downloads, and what users wait for on the model side "
                    "(cold infer, warm predict, batch infer, pseudo-labels, Stage A steps)", _speed, subparsers=sub)
    s.add_argument("--only", help=f"comma-separated subset of {','.join(SPEED_PARTS)}")
    s.add_argument("--quick", action="store_true", help="fewer posts, images and repeats everywhere (same sizes)")
    s.add_argument("--ingest-posts", type=int)
    s.add_argument("--catalogue-posts", type=int)
    s.add_argument("--download-images", type=int)
    s.add_argument("--max-workers", type=int, default=8)
    s.add_argument("--model", default="gaudi-lite0", help="the tiny checkpoints' and Stage A's model")
    s.add_argument("--image-size", type=int, default=None, help="model input side (default: the model's own)")
    s.add_argument("--batch-size", type=int, default=16, help="Stage A batch size (train)")
    s.add_argument("--big", type=int, nargs=2, default=[2048, 3072], metavar=("W", "H"),
                   help="the large picture (infer_cold, infer, infer_batch, pseudo)")
    s.add_argument("--mid", type=int, nargs=2, default=[512, 768], metavar=("W", "H"), help="infer's smaller picture")
    s.add_argument("--small", type=int, nargs=2, default=[128, 192], metavar=("W", "H"),
                   help="the small pictures of infer_batch and pseudo")
    s.add_argument("--train-side", type=int, default=2048, help="long side of Stage A's originals (train)")
    s.add_argument("--repeats", type=int, help="warm predict repeats per setting (default 4)")
    s.add_argument("--cold-repeats", type=int, help="cold `gaudi infer` runs (default 3)")
    s.add_argument("--batch-images", type=int, help="pictures per infer_batch folder (default 4)")
    s.add_argument("--batch-rounds", type=int, help="infer_batch rounds per folder, interleaved (default 2)")
    s.add_argument("--pseudo-images", type=int, help="pictures per pseudolabels run (default 8)")
    s.add_argument("--train-images", type=int, help="Stage A originals (default 32)")
    s.add_argument("--train-steps", type=int, help="Stage A steps timed (default 6)")
    s.add_argument("--threads", type=int, help="torch threads for the model parts (default: torch's own, "
                   "as users get); 1 steadies the numbers on a machine other work keeps busy")
    s.add_argument("--work-dir", help="keep the model parts' pictures, checkpoints and outputs here "
                   "(default: a temporary folder, removed)")
    s.add_argument("--out", default="bench.json")
