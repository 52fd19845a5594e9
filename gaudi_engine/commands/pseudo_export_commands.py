"""`gaudi export-pseudomasks RUN`: a pseudo-mask run's accepted masks as PNG zip, soft maps,
COCO RLE, CVAT "Segmentation mask 1.1" and FiftyOne files (pseudo/export.py)."""
from __future__ import annotations

HELP = """\
Formats (--format, comma-separated; default all):
  png       RUN_masks.zip     <post_id>/<tag>.png binary masks
  scores    RUN_scores.zip    <post_id>/<tag>.png soft score maps of the same masks
  coco      RUN_coco.json     COCO instances with RLE segmentations (overlapping masks kept)
  cvat      RUN_cvat.zip      CVAT "Segmentation mask 1.1" (labelmap.txt, SegmentationClass/Object)
  fiftyone  RUN_fiftyone.zip  FiftyOne ImageSegmentationDirectory (data/, labels/, mask_targets.json)
CVAT and FiftyOne hold one label per pixel: where masks overlap, the smaller mask is on top.

  gaudi -w ws export-pseudomasks runs/pseudomasks_v1 --format cvat,coco --out exports/
"""


def cmd_export_pseudomasks(args) -> int:
    from ..cli import workspace_of
    from ..errors import GaudiError
    from ..pseudo.export import FORMATS, export_run

    ws = workspace_of(args)
    run_dir = ws.resolve(args.run)
    if not (run_dir / "index.parquet").exists() and (ws.runs_dir / args.run / "index.parquet").exists():
        run_dir = ws.runs_dir / args.run  # a bare run name
    if not (run_dir / "index.parquet").exists():
        raise GaudiError(f"not a pseudo-mask run (no index.parquet): {ws.rel(run_dir)}")
    formats = [f.strip() for f in (args.format or ",".join(FORMATS)).split(",") if f.strip()]
    out = export_run(run_dir, ws, formats=formats, out_dir=ws.resolve(args.out) if args.out else None,
                     tag=args.tag)
    print(f"export-pseudomasks: {out['annotations']} masks of {out['images']} images, {len(out['tags'])} tags")
    for fmt, path in out["files"].items():
        print(f"  {fmt:9s} {ws.rel(path)}")
    return 0


def register(add_command) -> None:
    p = add_command("export-pseudomasks", "write a pseudo-mask run's accepted masks for other tools "
                    "(PNG, soft maps, COCO, CVAT, FiftyOne)", cmd_export_pseudomasks, description=HELP)
    p.add_argument("run", help="the run folder (runs/pseudomasks_v1) or its name")
    p.add_argument("--format", default=None, metavar="F[,F...]",
                   help="png, scores, coco, cvat, fiftyone (default: all)")
    p.add_argument("--tag", default=None, help="only this tag's masks")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: RUN/export)")
