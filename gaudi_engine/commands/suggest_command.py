"""`gaudi descriptions suggest`: LLM (or offline) descriptions from wiki text, stored as `llm`.
`description_commands.py` (the `descriptions` group) calls `register_suggest` for its subparsers."""
from __future__ import annotations

import sys


def register_suggest(subparsers, add_command) -> None:
    p = add_command(
        "suggest", "suggest 1-3 short visual descriptions per tag from its wiki text", _suggest,
        description="Write 1-3 short visual descriptions per general tag from its wiki text and "
                    "store them with source `llm`; a tag with the user's own descriptions is "
                    "never touched. Without --tags: every general tag with a wiki page and no "
                    "user/llm descriptions yet. Provider `openai` uses OPENAI_API_KEY (and "
                    "OPENAI_BASE_URL); without a key, `offline` (the wiki's first sentences).",
        subparsers=subparsers)
    p.add_argument("--tags", nargs="+", default=None, metavar="TAG", help="only these tags")
    p.add_argument("--provider", choices=["openai", "offline"], default=None,
                   help="default: openai when OPENAI_API_KEY is set, else offline")
    p.add_argument("--model", default=None, help="LLM model name (default gpt-4.1-mini)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")


def _suggest(args) -> int:
    from ..catalogue import open_catalogue
    from ..cli import workspace_of
    from ..text.llm import make_provider
    from ..text.suggest import suggest_descriptions, summary_line

    provider, note = make_provider(args.provider, args.model)
    if note:
        print(note, file=sys.stderr)
    cat = open_catalogue(workspace_of(args).ensure().catalogue_path)
    summary = suggest_descriptions(cat, args.tags, provider, concurrency=args.concurrency)
    print(summary_line(summary))
    return 0
