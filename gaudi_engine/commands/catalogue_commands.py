"""`gaudi init-db`, `gaudi stats`, `gaudi export-manifest`, `gaudi import-metadata`,
`gaudi export-catalogue`: the catalogue itself."""
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


def cmd_import_metadata(args) -> int:
    from ..booru.dump_import import import_metadata

    ws, cat = _open(args)
    s = import_metadata(cat, args.path, origin=args.origin, batch_size=args.batch_size,
                        workers=args.workers)
    print(f"import-metadata: {s['stored']} posts stored ({s['deleted']} deleted, {s['banned']} banned"
          f"/restricted) from {s['shards'] - s['skipped_shards']} shard(s); "
          f"{s['skipped_shards']} shard(s) already imported, skipped")
    return 0


def cmd_export_catalogue(args) -> int:
    from ..catalogue.parquet_export import export_parquet

    ws, cat = _open(args, create=False)
    out = ws.resolve(args.parquet)
    s = export_parquet(cat, out, rows_per_file=args.rows_per_file)
    parts = ", ".join(f"{t} {v['rows']} rows in {v['files']} file(s)" for t, v in s.items())
    print(f"export-catalogue: {parts} written to {ws.rel(out)}")
    return 0


IMPORT_METADATA_HELP = """\
Import Danbooru post metadata dumps into the catalogue, as if the posts had been synced.

PATH is one file or a folder of shards (searched recursively, in name order):
  *.jsonl / *.ndjson / *.json   JSON lines: one post object per line, the API's field names
                                (as /posts.json answers them); each may be gzip-compressed (.gz)
  *.parquet                     one row per post, columns named like the API's fields
Every post needs `id` and `tag_string_general`; only general tags enter post_tags. Banned or
restricted posts (no md5/URLs) are kept and their image marked not downloadable; deleted posts
are kept and flagged, exactly as `gaudi sync` stores them.

Posts are stored in batches, each with its shard's position: rerunning after an interruption
continues where the last stored batch ended, shards already imported are skipped, and importing
the same posts again changes nothing. Bad input (a line that is not JSON, a post without id or
tag_string_general, an unreadable file) stops with one line naming the file and line; what was
stored before it stays.

Example:
  gaudi -w ws import-metadata ~/danbooru-dump/            # a folder of posts-*.jsonl shards
  gaudi -w ws export-catalogue --parquet ws/export        # and back out, for DuckDB/Spark
"""

EXPORT_CATALOGUE_HELP = """\
Write the catalogue as Parquet shards that DuckDB, Spark or pandas read in place:
  DIR/posts/posts_<i>.parquet          posts (raw API JSON as text, general_tags space-separated)
  DIR/post_tags/post_tags_<i>.parquet  (post_id, tag): general tags only
  DIR/tags/tags_<i>.parquet            (name, category, post_count, is_deprecated, updated_at)
  DIR/descriptions/descriptions_<i>.parquet  (tag, idx, text, source, updated_at)
e.g. duckdb -c "SELECT count(*) FROM 'DIR/posts/*.parquet'". A rerun replaces the earlier
export table by table. No credentials are written (a URL's user:key@ or api_key= is cut out).
"""


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
    p = add_command("import-metadata",
                    "import Danbooru post metadata dumps (JSON lines or Parquet, a file or a "
                    "folder of shards) with the sync's upsert", cmd_import_metadata,
                    description=IMPORT_METADATA_HELP)
    p.add_argument("path", metavar="PATH", help="a dump file or a folder of shards")
    p.add_argument("--origin", default="https://danbooru.donmai.us", metavar="URL",
                   help="the booru the dump comes from, stored as the posts' origin "
                        "(default: https://danbooru.donmai.us)")
    p.add_argument("--batch-size", type=int, default=150_000, metavar="N",
                   help="posts per transaction, stored with the shard's position (default: "
                        "150000; DuckDB writes 122,880 rows or more straight to the file)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="parsing processes beside the writer; 0 parses in this process "
                        "(default: cores - 1, at least 1, at most 4)")
    p = add_command("export-catalogue",
                    "write the catalogue as Parquet shards (posts, post_tags, tags, descriptions)",
                    cmd_export_catalogue, description=EXPORT_CATALOGUE_HELP)
    p.add_argument("--parquet", required=True, metavar="DIR",
                   help="output folder; a relative path is inside the workspace")
    p.add_argument("--rows-per-file", type=int, default=1_000_000, metavar="N",
                   help="about this many rows per Parquet file (default: 1000000)")
