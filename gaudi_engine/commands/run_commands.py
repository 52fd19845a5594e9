"""`gaudi runs list` / `gaudi runs delete NAME`: a workspace's runs with what each was made from,
and the one way to delete one (`runs`, `lineage`)."""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

_NOT_SETTINGS = ("func", "workspace", "progress_jsonl", "command", "runs_command")


def command_settings(args: argparse.Namespace) -> dict[str, Any]:
    """A command's flags as the run's recorded settings (the lineage drops anything secret)."""
    return {k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS}


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def cmd_runs_list(args) -> int:
    from ..cli import workspace_of
    from ..runs import list_runs, made_from

    ws = workspace_of(args)
    runs = list_runs(ws)
    if args.json:
        print(json.dumps([{"run": r.name, "kind": r.kind, "status": r.status, "created": _when(r.created),
                           "modified": _when(r.modified), "lineage": r.lineage} for r in runs], indent=1))
        return 0
    if not runs:
        print(f"no runs under {ws.rel(ws.runs_dir)}/")
        return 0
    for r in runs:
        print(f"{r.name:<24} {r.status or '-':<11} created {_when(r.created)}  modified {_when(r.modified)}")
        if made_from(r):
            print(f"{'':<24} from {made_from(r)}")
    return 0


def cmd_runs_delete(args) -> int:
    from ..cli import workspace_of
    from ..runs import delete_run

    ws = workspace_of(args)
    for name in args.names:
        size = delete_run(ws, name)
        print(f"deleted run {name} ({size / 1e6:.1f} MB)")
    return 0


def register(add_command) -> None:
    p = add_command("runs", "list a workspace's runs (and what each was made from), delete one",
                    lambda a: p.print_help() or 0)
    sub = p.add_subparsers(dest="runs_command", metavar="ACTION")
    q = add_command("list", "runs newest first: status, created, modified, inputs (lineage.json)",
                    cmd_runs_list, subparsers=sub)
    q.add_argument("--json", action="store_true", help="print the runs and their whole lineage as JSON")
    q = add_command("delete", "delete run folders under runs/ (never one a running process writes)",
                    cmd_runs_delete, subparsers=sub)
    q.add_argument("names", nargs="+", metavar="NAME", help="a run's name, e.g. align_s1-002")
