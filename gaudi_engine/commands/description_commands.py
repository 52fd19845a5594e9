"""`gaudi descriptions import FILE | export --out FILE | from-wiki | list | set` (text/descriptions.py).
`descriptions suggest` (LLM) is added by gaudi_engine/commands/suggest_command.py when present."""
from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path


def _catalogue(args: argparse.Namespace):
    from ..catalogue import open_catalogue
    from ..cli import workspace_of

    ws = workspace_of(args).ensure()
    return ws, open_catalogue(ws.catalogue_path)


def cmd_import(args: argparse.Namespace) -> int:
    from ..text.descriptions import import_json

    ws, cat = _catalogue(args)
    # an input path is taken as given (relative to where the command runs), else in the workspace
    path = Path(args.file) if Path(args.file).exists() else ws.resolve(args.file)
    s = import_json(cat, path)
    print(f"imported {s['descriptions']} descriptions for {s['tags']} tags (as user descriptions)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..text.descriptions import export_json

    ws, cat = _catalogue(args)
    out = ws.resolve(args.out)
    n = export_json(cat, out)
    print(f"wrote {n} tags to {ws.rel(out)}")
    return 0


def cmd_from_wiki(args: argparse.Namespace) -> int:
    from ..text.descriptions import fill_from_wiki

    _, cat = _catalogue(args)
    s = fill_from_wiki(cat, sentences=args.sentences)
    print(f"wiki descriptions for {s['tags']} tags ({s['added']} new); "
          f"{s['skipped_user']} tags kept their user descriptions; {s['pages']} wiki pages read")
    if not s["pages"]:
        print("no wiki pages in the catalogue: run `gaudi sync-wiki` first")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..text.descriptions import general_tags_table

    _, cat = _catalogue(args)
    rows = general_tags_table(cat, search=args.search, order=args.order, limit=args.limit)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no general tags yet: run `gaudi sync` / `gaudi import-folder`, or import descriptions")
    for r in rows:
        first = r["descriptions"][0] if r["descriptions"] else ""
        more = f" (+{r['n_descriptions'] - 1})" if r["n_descriptions"] > 1 else ""
        print(f"{r['tag']:<32} {r['post_count']:>8} {r['source'] or '-':<9} {first[:70]}{more}")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    from ..text.descriptions import set_descriptions

    _, cat = _catalogue(args)
    n = set_descriptions(cat, args.tag, args.text, source="user")
    print(f"{args.tag}: {n} descriptions")
    return 0


def register(add_command) -> None:
    group = add_command("descriptions", "tag descriptions: import, export, fill from wiki, list",
                        lambda args: args.group_parser.print_help() or 2)
    group.set_defaults(group_parser=group)
    sub = group.add_subparsers(dest="descriptions_command", metavar="ACTION")

    p = add_command("import", "import a JSON file {tag: [description, ...]} as user descriptions",
                    cmd_import, subparsers=sub)
    p.add_argument("file", help="JSON file")

    p = add_command("export", "write all descriptions to a JSON file {tag: [description, ...]}",
                    cmd_export, subparsers=sub)
    p.add_argument("--out", required=True, help="output JSON file (e.g. data/tag_descriptions.json)")

    p = add_command("from-wiki", "describe general tags by their wiki's first sentences "
                    "(never replaces a user's description)", cmd_from_wiki, subparsers=sub)
    p.add_argument("--sentences", type=int, default=2, help="sentences per description (default 2)")

    p = add_command("list", "list general tags with post counts and descriptions", cmd_list,
                    subparsers=sub)
    p.add_argument("--search", default="", help="only tags containing this text")
    p.add_argument("--order", default="post_count", choices=["post_count", "tag", "n_descriptions"])
    p.add_argument("--limit", type=int, default=50, help="rows to show (default 50; 0 = all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = add_command("set", "replace a tag's descriptions with the given texts (as the user's)",
                    cmd_set, subparsers=sub)
    p.add_argument("tag")
    p.add_argument("text", nargs="*", help="descriptions (none = clear the tag's list)")

    # ---- issue-5 hook: `descriptions suggest` (LLM) lives in commands/suggest_command.py -------
    # That module, when it exists, defines register_suggest(subparsers, add_command) and adds
    # its own `suggest` subparser here. Nothing else in this file needs to change for it.
    try:
        suggest = importlib.import_module(f"{__package__}.suggest_command")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.suggest_command":
            raise  # the module exists but one of its imports is missing: show that
    else:
        suggest.register_suggest(sub, add_command)
