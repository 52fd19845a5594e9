"""`gaudi demo`: build the demo workspace from SynthBooru through a local Danbooru-compatible booru."""
from __future__ import annotations

import argparse
import json
import time


def register(add_command) -> None:
    p = add_command(
        "demo", "build the demo workspace (SynthBooru served as a local booru, synced into the catalogue)",
        cmd_demo,
        description="Generate SynthBooru scenes into WORKSPACE/demo_source, serve them with a local "
                    "Danbooru-compatible booru on 127.0.0.1, sync posts/images/tags/wiki from it and "
                    "import SynthBooru's tag descriptions. Runs once; --force rebuilds. With --serve the "
                    "booru keeps running (for `gaudi sync --base-url URL`) until Ctrl-C.")
    p.add_argument("--n", type=int, default=600, help="number of scenes (default 600)")
    p.add_argument("--size", type=int, nargs=2, default=[128, 192], metavar=("MIN", "MAX"),
                   help="each scene's width and height are drawn between MIN and MAX pixels (default 128 192)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild even if the demo was built")
    p.add_argument("--serve", action="store_true", help="keep serving the demo booru until Ctrl-C")


def cmd_demo(args: argparse.Namespace) -> int:
    from ..cli import workspace_of
    from ..demo import build_demo, start_demo_booru
    from ..errors import GaudiError

    if args.n < 1:
        raise GaudiError("--n must be at least 1")
    if min(args.size) < 32 or args.size[0] > args.size[1]:
        raise GaudiError("--size needs 32 <= MIN <= MAX")
    ws = workspace_of(args)
    info = build_demo(ws, n=args.n, size=tuple(args.size), seed=args.seed, force=args.force)
    print(f"demo workspace {ws.root}: " + json.dumps(info.get("counts", {}), default=str))
    if args.serve:
        booru = start_demo_booru(ws)
        print(f"demo booru at {booru.url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        finally:
            booru.stop()
    return 0
