"""The studio under test: `launch.py --demo` as a subprocess on a free port over a small workspace
whose demo booru serves 24 SynthBooru scenes and whose catalogue starts EMPTY (the Sync test fills
it). A tiny gaudi-tiny/64 px pipeline (Stage A -> pseudo-masks -> Stage B) is built with the CLI
in the background, once per session, for the Pseudo-masks / Playground / API tests."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, gaudi_env, run_gaudi_cmd

N_SCENES = 24
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
TINY = ["--model", "gaudi-tiny", "--image-size", "64", "--batch-size", "8", "--device", "cpu"]
UPLOAD_LIMIT_MB = 1  # the test studio's --max-upload-mb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_has(command: str) -> bool:
    from gaudi_engine.cli import build_parser

    parser = build_parser()
    return any(command in getattr(a, "choices", {}) or {} for a in parser._subparsers._group_actions)


class Pipeline:
    """Builds runs/align_s1 (Stage A) and runs/pseudomasks_v1 in a thread, with the names the
    Train tab uses, so the UI's "Stage B" button trains on them; `.wait()` for them."""

    def __init__(self, ws: Path):
        self.ws, self.error = ws, None
        self._thread = threading.Thread(target=self._build, daemon=True)
        self._thread.start()

    def _run(self, *argv: str) -> bool:
        rc, out, err = run_gaudi_cmd("--workspace", str(self.ws), *argv, timeout=400, cwd=self.ws)
        if rc != 0:
            self.error = f"gaudi {argv[0]} failed ({rc}): {err.strip()[-800:]}"
        return rc == 0

    def _build(self) -> None:
        common = ["--manifest", "demo_source/manifest.csv", "--tag-desc", "demo_source/tag_descriptions.json"]
        # 15 cheap epochs: enough for the validators to accept some masks (Stage B needs them)
        if cli_has("train-align"):
            if not self._run("train-align", *common, "--out", "runs/align_s1", *TINY, "--epochs", "15"):
                return
        else:  # the CLI command is not registered yet: the same trainer through its Python API
            from gaudi_engine.train.align import train_align

            try:
                train_align(self.ws / "demo_source/manifest.csv", self.ws / "demo_source/tag_descriptions.json",
                            self.ws / "runs/align_s1", model_name="gaudi-tiny", image_size=64, epochs=15,
                            batch_size=8, device="cpu", workspace_root=self.ws)
            except Exception as exc:  # reported by wait()
                self.error = f"train_align failed: {exc}"
                return
        self._run("pseudolabels", *common, "--align-ckpt", "runs/align_s1/checkpoints/model.pt",
                  "--out", "runs/pseudomasks_v1", "--device", "cpu")

    def wait(self) -> None:
        self._thread.join(600)
        if self.error:
            pytest.fail(self.error)


@pytest.fixture(scope="session")
def studio_ws(tmp_path_factory) -> Path:
    from gaudi_engine import synth

    ws = tmp_path_factory.mktemp("studio") / "ws"
    synth.generate(ws / "demo_source", N_SCENES, seed=0, size=(64, 80))
    # The demo is "built" (source present) but no post synced yet: the Sync test does that. The
    # descriptions are in (the Train tab exports them for Stage B).
    (ws / "demo.json").write_text(json.dumps({"n": N_SCENES, "counts": {}}))
    from gaudi_engine.catalogue import Catalogue
    from gaudi_engine.text.descriptions import import_json

    (ws / "data").mkdir(parents=True, exist_ok=True)
    cat = Catalogue(ws / "data" / "catalogue.duckdb")
    import_json(cat, ws / "demo_source" / "tag_descriptions.json")
    cat.close()
    return ws


@pytest.fixture(scope="session")
def pipeline(studio_ws) -> Pipeline:
    return Pipeline(studio_ws)


@contextlib.contextmanager
def running_studio(ws: Path, *args: str, log_name: str = "studio_server.log"):
    """`launch.py --workspace WS --demo ARGS` on a free port; yields its base URL; its log is
    saved to test-artifacts/LOG_NAME."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / log_name, "w")
    # a small upload limit, so the limit's test needs no huge file (every other upload is far smaller)
    env = gaudi_env({"GRADIO_ANALYTICS_ENABLED": "False", "GAUDI_MAX_UPLOAD_MB": str(UPLOAD_LIMIT_MB)})
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "launch.py"), "--workspace", str(ws),
                             "--demo", "--port", str(port), *args], cwd=REPO_ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    t0 = time.time()
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() - t0 > 90:
                proc.kill()
                pytest.fail("the studio did not start: " + (ARTIFACTS / log_name).read_text()[-2000:])
            time.sleep(0.5)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def studio(studio_ws, pipeline):
    """(base URL, workspace) of a running studio (its catalogue starts empty: no demo model job)."""
    with running_studio(studio_ws) as url:
        yield url, studio_ws


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (make browser installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser, studio):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(studio[0])
    pg.wait_for_selector("#sync-gallery")
    pg.js_errors = errors
    yield pg
    ctx.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"studio_{name}.png"), full_page=True)


def copy_sample(ws: Path, dest: Path) -> Path:
    src = sorted((ws / "demo_source" / "images").glob("*.png"))[0]
    shutil.copy(src, dest)
    return dest
