"""`gaudi fetch-images` and `gaudi import-folder`: images into data/images/xx/yy/md5.ext."""
from __future__ import annotations

import sys


def cmd_fetch_images(args) -> int:
    from ..booru.client import DanbooruClient
    from ..booru.media import fetch_images, summary_line
    from ..catalogue import open_catalogue
    from ..cli import workspace_of
    from ..workspace import DanbooruSettings

    from ..errors import GaudiError

    if args.rps < 0:
        raise GaudiError("--rps must be 0 (no cap) or more")
    ws = workspace_of(args).ensure()
    cat = open_catalogue(ws.catalogue_path)
    settings = DanbooruSettings.from_env(base_url=args.base_url)
    client = DanbooruClient(settings, max_rps=args.rps)
    summary = fetch_images(ws, cat, client, max_workers=args.max_workers,
                           skip_existing=args.skip_existing, variant=args.variant,
                           base_url=args.base_url)
    for err in summary["errors"][:5]:
        print(f"failed: {err}", file=sys.stderr)
    if summary["failed"] > 5:
        print(f"... and {summary['failed'] - 5} more failures (rerun to retry them)", file=sys.stderr)
    print(summary_line(summary))
    return 1 if summary["failed"] else 0


def cmd_import_folder(args) -> int:
    from ..booru.folder_import import import_folder, summary_line
    from ..catalogue import open_catalogue
    from ..cli import workspace_of

    ws = workspace_of(args).ensure()
    cat = open_catalogue(ws.catalogue_path)
    summary = import_folder(ws, cat, args.dir)
    if not sys.stderr.isatty():  # on a terminal the progress bar already showed each one
        for line in summary["errors"]:
            print(line, file=sys.stderr)
    warnings = summary["warnings"]
    for line in warnings[:10]:
        print(f"warning: {line}", file=sys.stderr)
    if len(warnings) > 10:
        print(f"warning: ... and {len(warnings) - 10} more images without a tag file", file=sys.stderr)
    print(summary_line(summary))
    return 0


def register(add_command) -> None:
    p = add_command(
        "fetch-images", "download the catalogue's images (verified, resumable)", cmd_fetch_images,
        description="Download every downloadable image of the catalogue into "
                    "data/images/xx/yy/md5.ext with a bounded pool of workers. Each file is "
                    "written to a temp file, md5-checked (originals) and fully decoded before it "
                    "counts; statuses go to the catalogue's media table. The workers share one "
                    "pace: when the server answers 429 (too many requests) every worker waits "
                    "its Retry-After and the pace drops by 30%, then creeps back up with each answer; "
                    "429s never use up a file's tries. Files that fail for a passing reason "
                    "(5xx, resets, cut-off bodies) are tried once more at the end of the run. "
                    "Rerun to resume: images already on disk are skipped and failed ones "
                    "retried. Exit status 1 if some images failed.")
    p.add_argument("--max-workers", type=int, default=8, metavar="N",
                   help="parallel downloads (default 8)")
    p.add_argument("--rps", type=float, default=0.0, metavar="N",
                   help="at most N requests per second, all workers together (default 0: no "
                        "cap until the server answers 429, then the pace adapts to it)")
    p.add_argument("--skip-existing", action="store_true", default=True,
                   help="skip images already verified on disk (the default)")
    p.add_argument("--no-skip-existing", dest="skip_existing", action="store_false",
                   help="download every image again")
    p.add_argument("--variant", choices=["original", "sample"], default="original",
                   help="original files (md5-verified) or Danbooru's ~850px samples "
                        "(large_file_url; checked by decoding only)")
    p.add_argument("--base-url", default=None, metavar="URL",
                   help="booru to fetch from when stored URLs are relative or point at the "
                        "booru the posts were synced from (default: $DANBOORU_BASE_URL)")
    p = add_command(
        "import-folder", "import a folder of images with sidecar NAME.txt tag files",
        cmd_import_folder,
        description="Import png/jpg/jpeg/webp/gif images under DIR (sub-folders too) into the "
                    "catalogue and data/images/. Tags come from NAME.txt beside each image: "
                    "comma-separated, spaces or underscores, any case (stored as Danbooru "
                    "tags: lowercase, spaces -> underscores); `rating:g|s|q|e` sets the rating. "
                    "Post ids derive from the image md5 (>= 2^40), so re-importing is "
                    "idempotent. Corrupt or empty images are reported and skipped.")
    p.add_argument("dir", metavar="DIR", help="folder of images")
