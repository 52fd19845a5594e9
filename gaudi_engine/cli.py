"""The `gaudi` command. Each group of subcommands lives in `gaudi_engine/commands/<group>.py`
with a `register(add_command)` function; heavy imports (torch, ...) happen inside the command
functions so `gaudi --help` and catalogue-only commands stay fast.

Errors a user can cause (`GaudiError`) end as one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable

from .errors import GaudiError

COMMAND_MODULES = [
    "catalogue_commands",
    "sync_commands",
    "media_commands",
    "description_commands",
    "align_commands",
    "learning_commands",
    "pseudo_export_commands",
    "run_commands",
    "bench_commands",
    "demo_commands",
    "token_commands",
]

EPILOG = """\
Seed pipeline:
  gaudi --workspace ws sync --limit 1000 --rating g   # posts + general tags
  gaudi --workspace ws fetch-images --max-workers 8
  gaudi --workspace ws sync-tags && gaudi --workspace ws sync-wiki
  gaudi --workspace ws descriptions from-wiki
  gaudi --workspace ws export-manifest --out data/manifest.csv
  gaudi --workspace ws train-align ...   (see `gaudi train-align --help`)

Environment: GAUDI_WORKSPACE, DANBOORU_BASE_URL, DANBOORU_USERNAME, DANBOORU_API_KEY,
DANBOORU_USER_AGENT, OPENAI_API_KEY, OPENAI_BASE_URL. Secrets are never written to disk.
"""


def _common_parser(suppress: bool) -> argparse.ArgumentParser:
    default = argparse.SUPPRESS if suppress else None
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--workspace", "-w", default=default,
                   help="workspace folder (default: $GAUDI_WORKSPACE or the current directory)")
    p.add_argument("--progress-jsonl", default=default, metavar="FILE",
                   help="also write machine-readable progress, one JSON object per line")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gaudi",
        description="GaUDI: learn tag -> segmentation mask for Danbooru-style illustrations "
                    "from image-level general tags and tag descriptions, with no drawn masks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_parser(suppress=False)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub_common = _common_parser(suppress=True)

    def add_command(name: str, help: str, func: Callable[[argparse.Namespace], int | None],
                    description: str | None = None, subparsers=None) -> argparse.ArgumentParser:
        p = (subparsers or sub).add_parser(
            name, help=help, description=description or help, parents=[sub_common],
            formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    add_command.common = sub_common  # for nested subcommands (e.g. `descriptions import`)
    for mod in COMMAND_MODULES:
        module = importlib.import_module(f".commands.{mod}", __package__)
        module.register(add_command)
    return parser


def workspace_of(args: argparse.Namespace):
    from .workspace import Workspace

    return Workspace(getattr(args, "workspace", None))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2 if args.command is None and argv is None and len(sys.argv) <= 1 else 0
    from . import progress

    progress.set_default_jsonl(getattr(args, "progress_jsonl", None))
    try:
        rc = args.func(args)
    except GaudiError as exc:
        print(f"gaudi {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gaudi {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # an unexpected failure: still one line unless debugging
        if os.environ.get("GAUDI_DEBUG"):
            raise
        print(f"gaudi {args.command}: internal error: {type(exc).__name__}: {exc} "
              f"(set GAUDI_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
