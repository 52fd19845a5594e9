"""`gaudi train-align` (Stage A: image–text alignment, DESIGN §6)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (in-process callers may swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _warnings_to_stderr() -> None:
    """Engine warnings (skipped images, tags without descriptions) as `warning: ...` lines."""
    root = logging.getLogger("gaudi_engine")
    if not any(getattr(h, "_gaudi", False) for h in root.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("warning: %(message)s"))
        h._gaudi = True
        root.addHandler(h)
        if root.level == logging.NOTSET or root.level > logging.WARNING:
            root.setLevel(logging.WARNING)


def _in_path(ws, p: str | None) -> Path | None:
    """An input path as given when it exists (relative to the cwd), else inside the workspace."""
    if p is None:
        return None
    path = Path(p)
    return path.resolve() if path.is_absolute() or path.exists() else ws.resolve(path)


def cmd_train_align(args) -> int:
    import os

    from ..cli import workspace_of
    from ..errors import GaudiError
    from ..lineage import input_records, recorded_run
    from ..runs import ALIGN, output_folder, prepare_training_out
    from ..train.align import train_align
    from .run_commands import command_settings

    _warnings_to_stderr()
    ws = workspace_of(args)
    manifest = _in_path(ws, args.manifest)
    tag_desc = _in_path(ws, args.tag_desc)
    if not args.resume:
        if manifest is None:
            raise GaudiError("--manifest is required (e.g. data/manifest.csv from `gaudi export-manifest`)")
        if not manifest.is_file():
            raise GaudiError(f"--manifest {args.manifest}: file not found")
        if tag_desc is not None and not tag_desc.is_file():
            raise GaudiError(f"--tag-desc {args.tag_desc}: file not found")
    out = output_folder(ws, args.out, ALIGN, resume=args.resume)
    prepare_training_out(ws, out, resume=args.resume, overwrite=args.overwrite)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    pretrained = _in_path(ws, args.pretrained) if args.pretrained and Path(args.pretrained).suffix else None
    inputs = input_records(ws, {"manifest": manifest, "tag_desc": tag_desc,
                                "pretrained": pretrained if pretrained and pretrained.is_file() else None})
    with recorded_run(out, "train-align", inputs, command_settings(args), resume=args.resume):
        summary = train_align(manifest, tag_desc, out, model_name=args.model, pretrained=args.pretrained,
                              image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
                              lr=args.lr, device=args.device, resume=args.resume, seed=args.seed,
                              workers=args.workers, max_steps=args.max_steps, log_every=args.log_every,
                              workspace_root=ws.root, save_minutes=args.save_minutes)
    if int(os.environ.get("RANK", 0)) == 0:
        skipped = f", {summary['skipped_images']} unreadable images skipped" if summary["skipped_images"] else ""
        print(f"train-align: {summary['epochs']} epochs, {summary['steps']} steps, {summary['images']} images, "
              f"{summary['vocab_size']} tags{skipped}; loss {summary['loss']:.4f}; "
              f"checkpoint {ws.rel(summary['checkpoint'])} ({summary['seconds']:.0f} s)")
    return 0


def register(add_command) -> None:
    p = add_command(
        "train-align", "Stage A: train the image–text alignment model on tagged images",
        cmd_train_align,
        description="Stage A (DESIGN §6): an open_clip image–text model learns dense tag similarity maps "
                    "from image-level general tags and their descriptions (multi-label sigmoid loss over a "
                    "pooled similarity map). Runs unchanged under `torchrun --nproc_per_node N`.\n\n"
                    "example: gaudi train-align --manifest data/manifest.csv --tag-desc data/tag_descriptions.json "
                    "(writes a new run: runs/align_s1, runs/align_s1-002, ...)")
    p.add_argument("--manifest", help="manifest CSV (post_id,image_path,tags,...)")
    p.add_argument("--tag-desc", help="tag descriptions JSON {tag: [description, ...]}")
    p.add_argument("--out", default=None,
                   help="run folder (default: a new run, runs/align_s1, then runs/align_s1-002, ...; with "
                        "--resume: the newest align_s1 run)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the trained run already in --out (without it such a folder is refused)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 14)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (default 32)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3)")
    p.add_argument("--model", default="gaudi-lite0",
                   help="open_clip model name: gaudi-lite0 (default), gaudi-tiny, or any open_clip.list_models()")
    p.add_argument("--pretrained", default=None,
                   help="open_clip pretrained tag or a local weights file; 'none' = random init")
    p.add_argument("--image-size", type=int, default=None, help="training resolution (default: the model's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (auto: CUDA with AMP when available)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (default: the newest align_s1 run) from checkpoints/last.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (images are cached in memory)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--log-every", type=int, default=10, help="steps between metric lines")
    p.add_argument("--save-minutes", type=float, default=10.0,
                   help="minutes between resume checkpoints (last.pt) inside an epoch; each epoch's end "
                        "saves one too (default 10; 0: at epoch ends only)")
