"""`gaudi init-db`, `gaudi stats`, `gaudi export-manifest`: the catalogue itself."""
from __future__ import annotations

import json


def _open(args, create: bool = True):
    from ..catalogue import open_catalogue
    from ..cli import workspace_of
    from ..errors import GaudiError

    ws = workspace_of(args)
    if not create and not ws.catalogue_path.exists():
        raise GaudiError(f"no catalogue in workspace {ws.root}: run `gaudi init-db`, a sync or "
                         f"an import first")
    ws.ensure()
    return ws, open_catalogue(ws.catalogue_path)


def cmd_init_db(args) -> int:
    ws, cat = _open(args)
    print(f"catalogue {ws.rel(cat.path)} ready (schema version {cat.schema_version()}) "
          f"in workspace {ws.root}")
    return 0


def cmd_stats(args) -> int:
    from ..catalogue.queries import counts

    ws, cat = _open(args, create=False)
    c = counts(cat)
    if args.json:
        print(json.dumps(c))
        return 0
    m = c["media"]
    print(f"posts {c['posts']} (deleted {c['deleted']}, banned {c['banned']}, "
          f"imported {c['imported']}); general tags {c['tags']} ({c['post_tags']} post-tag pairs)")
    print(f"images: ok {m['ok']} ({c['media_bytes'] / 1e6:.1f} MB), pending {m['pending']}, "
          f"failed {m['failed']}, not downloadable {m['not_downloadable']}, "
          f"not images {m['not_image']}")
    print(f"wiki pages {c['wiki_pages']}; tags with descriptions {c['descriptions']}")
    return 0


def cmd_export_manifest(args) -> int:
    from ..catalogue.manifest import export_manifest

    ws, cat = _open(args, create=False)
    out = ws.resolve(args.out)
    rows = export_manifest(ws, cat, out)
    print(f"export-manifest: {rows} posts with images written to {ws.rel(out)}")
    return 0


def register(add_command) -> None:
    add_command("init-db", "create the workspace and its catalogue (or migrate it to this version)",
                cmd_init_db)
    p = add_command("stats", "counts of posts, tags and images in the catalogue", cmd_stats)
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    p = add_command("export-manifest",
                    "write the training manifest (posts whose image is on disk, not deleted)",
                    cmd_export_manifest,
                    description="Write a CSV with columns post_id,image_path,tags,md5,rating,"
                                "width,height,file_ext,source: one row per post whose image is "
                                "on disk and that is not deleted; tags are its general tags, "
                                "space-separated; image_path is relative to the workspace.")
    p.add_argument("--out", default="data/manifest.csv", metavar="FILE",
                   help="output CSV; a relative path is inside the workspace "
                        "(default: data/manifest.csv)")
