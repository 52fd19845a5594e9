#!/usr/bin/env python
"""Start GaUDI Studio.

    python launch.py [--workspace DIR] [--demo] [--host 127.0.0.1] [--port 7860] [--auth USER:PASS]

Binds 127.0.0.1 unless told otherwise; any other host needs --auth (or GAUDI_AUTH=USER:PASS).
--demo builds the demo workspace once (SynthBooru through a local booru, see `gaudi demo`) and
serves that booru to the Sync tab as "Demo booru"; on the first launch it also queues the
"Demo model" job (the pipeline with a short schedule, studio/demo_model.py) so the Playground
has masks within minutes; --no-demo-model skips it.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys

DEMO_WORKSPACE = "demo_workspace"


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth / GAUDI_AUTH must be USER:PASS")
    return user, password


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="launch.py", description="GaUDI Studio (Gradio)")
    p.add_argument("--workspace", "-w", default=None,
                   help=f"workspace folder (default: $GAUDI_WORKSPACE, the current directory, "
                        f"or {DEMO_WORKSPACE}/ with --demo)")
    p.add_argument("--demo", action="store_true", help="build (once) and open the demo workspace")
    p.add_argument("--demo-n", type=int, default=600, help="scenes in the demo workspace (default 600)")
    p.add_argument("--no-demo-model", action="store_true",
                   help="with --demo: do not train the demo model by itself on first launch")
    p.add_argument("--demo-model-config", default=None, metavar="JSON",
                   help="with --demo: the demo model's schedule (fields of studio.demo_model.DemoSchedule: "
                        "model, align_epochs, seg_epochs, image_size, batch_size, device)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", default=None, metavar="USER:PASS", help="required for a non-loopback --host")
    p.add_argument("--max-upload-mb", default=None, metavar="MB",
                   help="largest file a browser may upload (default $GAUDI_MAX_UPLOAD_MB or 50)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        auth = parse_auth(args.auth or os.environ.get("GAUDI_AUTH"))
    except ValueError as exc:
        print(f"launch.py: error: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(args.host) and auth is None:
        print(f"launch.py: error: refusing to serve on {args.host} without --auth USER:PASS "
              f"(or GAUDI_AUTH): the studio can read and write your workspace", file=sys.stderr)
        return 2

    from gaudi_engine.errors import GaudiError
    from gaudi_engine.workspace import Workspace
    from studio.uploads import max_upload_bytes

    from studio.demo_model import DemoSchedule

    try:
        max_upload = max_upload_bytes(args.max_upload_mb)
        schedule = DemoSchedule.from_file(args.demo_model_config) if args.demo_model_config else None
    except GaudiError as exc:
        print(f"launch.py: error: {exc}", file=sys.stderr)
        return 2

    root = args.workspace or os.environ.get("GAUDI_WORKSPACE") or (DEMO_WORKSPACE if args.demo else None)
    ws = Workspace(root).ensure()
    # Gradio's copies of served files stay inside the workspace; no telemetry (no network).
    os.environ.setdefault("GRADIO_TEMP_DIR", str(ws.runs_dir / "_studio" / "gradio"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        booru = None
        if args.demo:
            from gaudi_engine.demo import build_demo, is_built, start_demo_booru

            if not is_built(ws):
                print(f"building the demo workspace in {ws.root} (once)…", flush=True)
            info = build_demo(ws, n=args.demo_n)
            print(f"demo workspace ready: {info.get('counts')}", flush=True)
            booru = start_demo_booru(ws)
        from studio.app import ensure_samples, launch
        from studio.state import StudioState

        ensure_samples()
        state = StudioState.open(ws, demo_booru=booru, max_upload=max_upload)
        if args.demo and not args.no_demo_model:
            from studio.demo_model import start_demo_model

            print(start_demo_model(state, schedule)[1], flush=True)
    except GaudiError as exc:
        print(f"launch.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"GaUDI Studio on http://{args.host}:{args.port} (workspace {ws.root})", flush=True)
    # a job's `gaudi` step runs in its own session: end it with the studio (Ctrl-C or SIGTERM),
    # or a demo model would go on training with nobody to show it to
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        launch(state, host=args.host, port=args.port, auth=auth)
    finally:
        state.jobs.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
