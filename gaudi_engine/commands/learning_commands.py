"""`gaudi pseudolabels`, `gaudi train-segmenter`, `gaudi infer` (DESIGN §3, §6)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path


def _warnings_to_stderr() -> None:
    """Engine warnings (skipped images, tags without descriptions) as `warning: ...` lines."""
    root = logging.getLogger("gaudi_engine")
    if not any(getattr(h, "_gaudi", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("warning: %(message)s"))
        h._gaudi = True
        root.addHandler(h)
        root.setLevel(logging.WARNING)
        root.propagate = False


def _in_path(ws, p) -> Path | None:
    """An input path: as given when it exists (relative to the cwd), else inside the workspace."""
    if p is None:
        return None
    path = Path(p)
    if path.is_absolute() or path.exists():
        return path.resolve()
    return ws.resolve(path)


def _out_path(ws, p) -> Path:
    path = Path(p)
    return path if path.is_absolute() else ws.root / path


def _device(name: str) -> str:
    import torch

    from ..errors import GaudiError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GaudiError("--device cuda asked for but no CUDA device is available")
    return name


def _required_file(p: Path | None, flag: str) -> Path:
    from ..errors import GaudiError

    if p is None or not p.is_file():
        raise GaudiError(f"{flag} {p}: file not found")
    return p


def _checkpoint_file(ws, p, flag: str) -> Path | None:
    """A checkpoint flag's file: a file, or a run folder (-> its checkpoints/model.pt), or a
    model.pt that an older run (last.pt only) lacks (-> that last.pt); None when not given."""
    if not p:
        return None
    from ..models.checkpoint import resolve_checkpoint

    return _required_file(resolve_checkpoint(_in_path(ws, p)), flag)


def _pseudo_config(args, ws):
    """The run's PseudoConfig: the defaults, or `--config FILE`; then the shorthand flags
    (`--no-affinity`, `--mutual none`, ...); then each `--set key=value`, in that order."""
    from ..errors import GaudiError
    from ..pseudo.config import PseudoConfig, apply_settings, check_config, load_config

    if args.reject_quantile is not None and not 0.0 <= args.reject_quantile < 1.0:
        raise GaudiError(f"--reject-quantile must be in [0, 1), got {args.reject_quantile}")
    if args.fine_zoom is not None and args.fine_zoom < 1.0:
        raise GaudiError(f"--fine-zoom must be >= 1 (1 = every tag at the base scale), got {args.fine_zoom}")
    cfg = load_config(_in_path(ws, args.config)) if args.config else PseudoConfig()
    shorthands = []  # (key, value) of each flag given
    if args.cam_mode is not None:
        shorthands.append(("cam.mode", args.cam_mode))
    if args.regions is not None:
        shorthands.append(("regions", None if args.regions == "none" else args.regions))
    if args.no_affinity:
        shorthands.append(("affinity", False))
    if args.no_validators:
        shorthands.append(("validators.enabled", False))
    if args.validator_policy is not None:
        shorthands.append(("validators.policy", args.validator_policy))
    if args.reject_quantile is not None:
        shorthands.append(("validators.reject_quantile", args.reject_quantile))
    if args.fine_zoom is not None:
        shorthands.append(("fine_zoom", args.fine_zoom))
    if args.mutual is not None:
        shorthands.append(("mutual", None if args.mutual == "none" else args.mutual))
    if args.occluders is not None:
        shorthands.append(("cut_occluders", args.occluders == "cut"))
    return check_config(apply_settings(apply_settings(cfg, shorthands), args.set or []))


POSTS_PER_WORKER = 150  # below this a worker's start-up (model load) costs more than it saves
MAX_AUTO_WORKERS = 4


def auto_workers(n_posts: int, device: str) -> int:
    """Worker processes for a CPU run: one per core (a process per core labels faster than one
    process's threads; BENCHMARKS.md), but only when each gets enough posts."""
    if device != "cpu":
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS, n_posts // POSTS_PER_WORKER))


def cmd_pseudolabels(args) -> int:
    from ..child_process import dies_with_this_process
    from ..cli import workspace_of
    from ..errors import GaudiError
    from ..lineage import input_records, recorded_run
    from ..pseudo.output import merge_index, parse_shard
    from ..pseudo.run import run_pseudolabels, write_run_config
    from ..runs import PSEUDO_V1, PSEUDO_V2, output_folder, prepare_labelling_out
    from ..train.data import read_manifest
    from .run_commands import command_settings

    _warnings_to_stderr()
    ws = workspace_of(args)
    manifest = _required_file(_in_path(ws, args.manifest), "--manifest")
    tag_desc = _required_file(_in_path(ws, args.tag_desc), "--tag-desc") if args.tag_desc else None
    align = _checkpoint_file(ws, args.align_ckpt, "--align-ckpt")
    seg = _checkpoint_file(ws, args.segmenter_ckpt, "--segmenter-ckpt")
    shard = parse_shard(args.shard)
    cfg = _pseudo_config(args, ws)
    if not args.out and shard[1] > 1:
        raise GaudiError("--shard needs --out (every shard writes the same run)")
    n_posts = len(read_manifest(manifest))
    inputs = input_records(ws, {"manifest": manifest, "tag_desc": tag_desc, "align_ckpt": align,
                                "segmenter_ckpt": seg})
    settings = {**command_settings(args), "pseudo": cfg.to_dict()}
    out = output_folder(ws, args.out, PSEUDO_V2 if seg else PSEUDO_V1)
    prepare_labelling_out(ws, out, inputs, settings, overwrite=args.overwrite and shard[1] == 1)
    expected = {"posts": min(n_posts, args.limit) if args.limit and shard[1] == 1 else n_posts}
    workers = args.workers if args.workers is not None else auto_workers(n_posts, args.device)
    if workers > 1:
        # each worker is a sub-shard of this shard (contiguous chunks nest exactly) and reads the
        # run's settings from its config.json, written here first. The run-level measurements
        # (structure, validator floors) are made here once, with the calibration posts written,
        # so no worker repeats them
        config_file = write_run_config(out, cfg, manifest, align, seg)
        with recorded_run(out, "pseudolabels", inputs, settings, resume=True, shard=shard, expected=expected):
            run_pseudolabels(manifest, tag_desc, align, out, segmenter_ckpt=seg, shard=shard,
                             device=_device(args.device), config=cfg, calibration_only=True)
        i, n = shard
        base = ["--workspace", str(ws.root), "pseudolabels", "--manifest", str(manifest),
                "--align-ckpt", str(align), "--out", str(out), "--device", args.device,
                "--config", str(config_file)]
        base += ["--tag-desc", str(tag_desc)] if tag_desc else []
        base += ["--segmenter-ckpt", str(seg)] if seg else []
        base += ["--progress-jsonl", args.progress_jsonl] if getattr(args, "progress_jsonl", None) else []
        base += ["--workers", "1"]
        procs = []
        for j in range(workers):
            sub = base + ["--shard", f"{i * workers + j}/{n * workers}"]
            env = dict(os.environ, OMP_NUM_THREADS="1")
            procs.append(subprocess.Popen([sys.executable, "-m", "gaudi_engine", *sub], env=env,
                                          preexec_fn=dies_with_this_process()))  # a kill -9 ends them too
        codes = [p.wait() for p in procs]
        if any(codes):
            raise GaudiError(f"{sum(1 for c in codes if c)} of {workers} workers failed; rerun to resume")
        rows = merge_index(out)
        print(f"pseudolabels: {workers} workers done; index.parquet has {rows} rows ({ws.rel(out)})")
        return 0
    # a rerun goes on labelling the same run (resume=True: it keeps an input left out this time)
    with recorded_run(out, "pseudolabels", inputs, settings, resume=True, shard=shard, expected=expected):
        summary = run_pseudolabels(manifest, tag_desc, align, out, segmenter_ckpt=seg, shard=shard,
                                   device=_device(args.device), config=cfg, limit=args.limit)
    print(f"pseudolabels: {summary['processed']} posts labelled, {summary['skipped_done']} already done, "
          f"{summary['skipped_unreadable']} unreadable; {summary['accepted']}/{summary['masks']} masks accepted; "
          f"index.parquet has {summary['index_rows']} rows ({ws.rel(out)})")
    return 0


def cmd_train_segmenter(args) -> int:
    from ..cli import workspace_of
    from ..errors import GaudiError
    from ..lineage import input_records, recorded_run
    from ..runs import output_folder, prepare_training_out
    from ..train.segmenter import train_segmenter
    from .run_commands import command_settings

    _warnings_to_stderr()
    ws = workspace_of(args)
    manifest = _required_file(_in_path(ws, args.manifest), "--manifest")
    tag_desc = _required_file(_in_path(ws, args.tag_desc), "--tag-desc") if args.tag_desc else None
    if not args.pseudomasks and not args.gt_masks:
        raise GaudiError("pass --pseudomasks DIR (or --gt-masks DIR for the oracle)")
    pm = _in_path(ws, args.pseudomasks) if args.pseudomasks else None
    gt = _in_path(ws, args.gt_masks) if args.gt_masks else None
    if gt is not None and not gt.is_dir():
        raise GaudiError(f"--gt-masks {gt}: not a folder")
    init = _checkpoint_file(ws, args.init_from, "--init-from")
    out = output_folder(ws, args.out, _segmenter_kind(pm, gt), resume=args.resume)
    prepare_training_out(ws, out, resume=args.resume, overwrite=args.overwrite)
    inputs = input_records(ws, {"manifest": manifest, "tag_desc": tag_desc, "pseudomasks": pm,
                                "init_from": init, "gt_masks": gt})
    with recorded_run(out, "train-segmenter", inputs, command_settings(args), resume=args.resume):
        summary = train_segmenter(manifest=manifest, tag_desc=tag_desc, pseudomasks=pm, out=out,
                                  epochs=args.epochs, init_from=init, gt_masks=gt, batch_size=args.batch_size,
                                  lr=args.lr, device=args.device, resume=args.resume, seed=args.seed,
                                  workers=args.workers, save_minutes=args.save_minutes)
    print(f"train-segmenter: {summary.get('epochs', args.epochs)} epochs, final loss "
          f"{summary.get('loss', float('nan')):.4f}; checkpoint {ws.rel(summary['checkpoint'])}")
    return 0


def _segmenter_kind(pseudomasks: Path | None, gt_masks: Path | None) -> str:
    """seg_s2 on round-2 pseudo-masks, seg_s1 on round 1's, seg_oracle on ground truth."""
    from ..runs import SEG_ORACLE, SEG_S1, SEG_S2

    if gt_masks is not None:
        return SEG_ORACLE
    try:
        round_ = json.loads((pseudomasks / "config.json").read_text()).get("round", 1)
    except (OSError, ValueError, TypeError):
        round_ = 1
    return SEG_S2 if round_ == 2 else SEG_S1


def cmd_infer(args) -> int:
    from ..cli import workspace_of
    from ..errors import GaudiError
    from ..infer import Predictor, infer_batch, infer_single

    _warnings_to_stderr()
    ws = workspace_of(args)
    if bool(args.image) == bool(args.images):
        raise GaudiError("pass exactly one of --image FILE (single) or --images DIR (batch)")
    align = _checkpoint_file(ws, args.align_ckpt, "--align-ckpt")
    seg = _checkpoint_file(ws, args.segmenter_ckpt, "--segmenter-ckpt")
    if not 0.0 < args.threshold < 1.0:
        raise GaudiError("--threshold must be between 0 and 1")
    descs = None
    if args.tag_desc:
        from ..train.data import load_tag_descriptions

        descs = load_tag_descriptions(_required_file(_in_path(ws, args.tag_desc), "--tag-desc"))
    masks_dir = _out_path(ws, args.masks_dir) if args.masks_dir else None
    if args.image:
        image = _in_path(ws, args.image)
        if not image.is_file():
            raise GaudiError(f"--image {image}: file not found")
        pred = Predictor(align, seg, device=_device(args.device), descriptions=descs, regions=args.regions)
        out_json = _out_path(ws, args.out) if args.out else None
        viz = _out_path(ws, args.viz) if args.viz else None
        result = infer_single(pred, image, args.tags, out_json, viz, masks_dir, args.threshold)
        if out_json is None:
            print(json.dumps(result))
        else:
            areas = ", ".join(f"{t['tag']}={t['area']}" for t in result["tags"])
            print(f"infer: {len(result['tags'])} masks ({areas}) -> {ws.rel(out_json)}")
        return 0
    if not args.out_dir:
        raise GaudiError("batch mode (--images DIR) needs --out-dir D")
    images = _in_path(ws, args.images)
    pred = Predictor(align, seg, device=_device(args.device), descriptions=descs, regions=args.regions)
    summary = infer_batch(pred, images, _out_path(ws, args.out_dir), args.tags, masks_dir, args.threshold)
    names = summary["skipped_files"]
    which = f" ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else ""
    print(f"infer: {summary['images']} images done, {summary['skipped']} skipped{which} -> {ws.rel(summary['out_dir'])}")
    return 0


def register(add_command) -> None:
    p = add_command(
        "pseudolabels", "text-CAM + affinity + regions + validators -> pseudo-masks", cmd_pseudolabels,
        description="Make a pseudo-mask for every (post, general tag) of a manifest with a Stage A "
                    "align checkpoint (round 2: read off a round-1 segmenter), validate it "
                    "(augmentation consistency, causal deletion/insertion) and write "
                    "OUT/{masks,rejected,scores}/<post_id>/<tag>.png + OUT/index.parquet. "
                    "Resumable: a rerun skips finished posts.")
    p.add_argument("--manifest", required=True, help="manifest.csv (gaudi export-manifest / synth)")
    p.add_argument("--tag-desc", help="tag_descriptions.json (default: the checkpoint's)")
    p.add_argument("--align-ckpt", required=True,
                   help="Stage A checkpoint: runs/align_s1/checkpoints/model.pt (or the run folder)")
    p.add_argument("--segmenter-ckpt", help="round 2: a Stage B checkpoint (checkpoints/model.pt) whose probabilities "
                   "(>= 0.5, averaged in regions) replace the CAM's maps (self-training)")
    p.add_argument("--out", help="output folder (default: a new run, runs/pseudomasks_v1 or, with "
                   "--segmenter-ckpt, runs/pseudomasks_v2; then -002, -003...). An existing run there goes on "
                   "(finished posts are skipped) when made from the same inputs and settings")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out when it was made from other inputs or settings")
    p.add_argument("--shard", help="I/N: do only the I-th of N contiguous parts of the posts")
    p.add_argument("--workers", type=int, default=None,
                   help="run this many shard processes here, one CPU thread each (default on CPU: one per "
                        f"{POSTS_PER_WORKER} posts, at most one per core and {MAX_AUTO_WORKERS}; 1 on a GPU)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto (default cpu)")
    p.add_argument("--config", metavar="FILE",
                   help="the pseudo-labeller's settings: a JSON of PseudoConfig fields (nested objects for "
                        "cam and validators), or a pseudo-mask run's config.json (redo that run); the "
                        "flags below and --set apply over it")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change one setting, e.g. --set validators.reject_quantile=0.2 --set cam.mode=all "
                        "(dotted keys reach into cam and validators; the value is read as JSON, else as a "
                        "string); repeatable, applied last. The run's config.json holds the result")
    p.add_argument("--cam-mode", choices=["nesting", "all", "background"],
                   help="what a tag competes with in the CAM softmax (default nesting)")
    p.add_argument("--regions", choices=["slic", "felzenszwalb", "none"],
                   help="superpixels the CAM is averaged over (default felzenszwalb)")
    p.add_argument("--no-affinity", action="store_true", help="skip affinity refinement (ablation)")
    p.add_argument("--no-validators", action="store_true", help="accept every non-empty mask (ablation)")
    p.add_argument("--validator-policy", choices=["relative", "absolute"],
                   help="relative (default): reject the bottom --reject-quantile of each tag's validator "
                        "quality, calibrated on the first posts; absolute: a fixed threshold per check")
    p.add_argument("--reject-quantile", type=float,
                   help="relative policy: share of each tag's masks to reject (default 0.1)")
    p.add_argument("--fine-zoom", type=float,
                   help="small things (median mask under 12%% of the image on the first posts) are "
                        "mapped on the image enlarged this much; 1 = every tag at the base scale "
                        "(default 2)")
    p.add_argument("--mutual", choices=["appearance", "none"],
                   help="tags that imply each other (ocean/beach: >= 90%% co-occurrence both ways): "
                        "appearance (default) splits the pixels either mask claims into two colour "
                        "clusters and gives each to the tag whose look it matches, the looks oriented "
                        "by the posts that show the broad tag alone (ocean without beach); none leaves "
                        "both alone")
    p.add_argument("--occluders", choices=["cut", "join"],
                   help="a thing nested in stuff on the first posts (a cloud in the sky, a tree on the "
                        "grass; stuff: a tag whose masks typically span >= 90%% of the image's width) "
                        "stands in front of it: cut "
                        "(default) takes its mask out of the stuff's, as COCO's panoptic masks do; "
                        "join adds it, as a part's (a dress in 1girl) always is")
    p.add_argument("--limit", type=int, help="at most this many posts (of this shard)")

    p = add_command(
        "train-segmenter", "Stage B: train the text-conditioned segmenter", cmd_train_segmenter,
        description="Train the text-conditioned segmenter (Stage A's image tower + a light FPN "
                    "decoder dotted with tag text embeddings) on accepted pseudo-masks with BCE + "
                    "Dice, an ignore band and negatives from absent tags; --gt-masks trains the "
                    "oracle on ground truth instead. Same loop as train-align (resume, DDP, AMP).")
    p.add_argument("--manifest", required=True)
    p.add_argument("--tag-desc")
    p.add_argument("--pseudomasks", help="a pseudolabels output folder")
    p.add_argument("--gt-masks", help="oracle: GT/NAME/<tag>.png masks instead of pseudo-masks")
    p.add_argument("--out", help="run folder (default: a new run, runs/seg_s1, or seg_s2 on round-2 "
                   "pseudo-masks; then -002, -003...; with --resume: the newest such run)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the trained run already in --out (without it such a folder is refused)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs (default 10; 5 when --init-from is a segmenter checkpoint, i.e. round 2 "
                        "going on training round 1)")
    p.add_argument("--init-from", help="checkpoint (checkpoints/model.pt) to start from: Stage A align (fresh "
                   "decoder; default: the pseudomasks' one) or a segmenter (go on training it: round 2 "
                   "self-training)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--save-minutes", type=float, default=10.0,
                   help="minutes between resume checkpoints (last.pt) inside an epoch; each epoch's end "
                        "saves one too (default 10; 0: at epoch ends only)")

    p = add_command(
        "infer", "per-tag masks for an image (or a folder of images)", cmd_infer,
        description="Single: --image P --tags 'a b' --out out.json --viz out.png. Batch: --images DIR "
                    "[--tags ...] --out-dir D (tags from each image's sidecar NAME.txt when --tags is "
                    "absent) writes D/NAME.json and D/NAME.png; --masks-dir M adds M/NAME/<tag>.png.")
    p.add_argument("--image")
    p.add_argument("--images")
    p.add_argument("--tags", help="space- or comma-separated tags")
    p.add_argument("--out", help="single mode: JSON output (default: print it)")
    p.add_argument("--viz", help="single mode: overlay PNG")
    p.add_argument("--out-dir", help="batch mode: output folder")
    p.add_argument("--align-ckpt", help="Stage A checkpoint: runs/align_s1/checkpoints/model.pt (or the run folder)")
    p.add_argument("--segmenter-ckpt", help="Stage B checkpoint: runs/seg_s2/checkpoints/model.pt (or the run folder)")
    p.add_argument("--masks-dir")
    p.add_argument("--tag-desc", help="extra descriptions for tags the checkpoint does not know")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--regions", default="felzenszwalb", choices=["felzenszwalb", "slic", "none"],
                   help="average each tag's map inside these superpixels so masks follow the image's "
                        "edges (default felzenszwalb; none = the raw map)")
    p.add_argument("--device", default="cpu")
