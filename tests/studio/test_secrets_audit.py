"""The secrets audit (DESIGN §7: credentials shown masked, never stored): with DANBOORU_API_KEY and
OPENAI_API_KEY set to sentinels, a sync against the fake Danbooru, LLM descriptions from the fake
OpenAI server, a short training job run the way the studio runs it, and the studio's served pages
leave no trace of either key in the catalogue, logs, run configs, job files or pages."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, gaudi_env, run_gaudi_cmd
from tests.fakes.openai_server import FakeOpenAI

from .conftest import TINY, free_port

DANBOORU_KEY = "SENTINEL-danbooru-key-5b1f0c7e"
OPENAI_KEY = "sk-SENTINEL-openai-key-93ad7e11"
WRONG_KEY = "SENTINEL-wrong-key-c0ffee42"
# the full keys and their distinctive middles (a truncated or partly masked leak is still a leak)
NEEDLES = [DANBOORU_KEY, OPENAI_KEY, WRONG_KEY, "danbooru-key-5b1f", "openai-key-93ad", "wrong-key-c0ff"]


def leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        return [n for n in NEEDLES if n.encode() in text or n.encode("utf-16-le") in text]
    return [n for n in NEEDLES if n in text]


def catalogue_leaks(db: Path) -> list[str]:
    """Every text column of every table, searched in SQL (the file itself may be compressed)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        found = []
        cols = con.execute("SELECT table_name, column_name FROM information_schema.columns "
                           "WHERE data_type IN ('VARCHAR', 'JSON') OR data_type LIKE '%[]'").fetchall()
        for table, col in cols:
            for n in NEEDLES:
                hit = con.execute(f'SELECT count(*) FROM "{table}" WHERE CAST("{col}" AS VARCHAR) LIKE ?',
                                  [f"%{n}%"]).fetchone()[0]
                if hit:
                    found.append(f"{table}.{col}: {n}")
        return found
    finally:
        con.close()


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=20) as r:
        return r.read().decode("utf-8", "replace")


@pytest.mark.timeout(600)
def test_no_key_reaches_the_catalogue_logs_configs_jobs_or_pages(tmp_path, monkeypatch):
    from gaudi_engine import synth
    from gaudi_engine.booru.local_booru import LocalBooru
    from gaudi_engine.jobs import FINISHED, JobManager, Step
    from gaudi_engine.workspace import Workspace, mask_secret

    synth.generate(tmp_path / "src", 8, seed=0, size=(64, 64))
    booru = LocalBooru.from_folder(tmp_path / "src", auth=("alice", DANBOORU_KEY))
    booru.start()
    fake = FakeOpenAI(api_key=OPENAI_KEY).start()
    ws = tmp_path / "ws"
    env = {"DANBOORU_USERNAME": "alice", "DANBOORU_API_KEY": DANBOORU_KEY, "DANBOORU_BASE_URL": booru.url,
           "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": fake.base_url}
    said: list[str] = []
    try:
        # --rps 0: the fake booru needs no pacing (sync-wiki at the default 2 requests/s spent ~9 s)
        for argv in (["sync", "--rps", "0"], ["fetch-images", "--max-workers", "2"], ["sync-tags", "--rps", "0"],
                     ["sync-wiki", "--rps", "0"],
                     ["descriptions", "suggest", "--provider", "openai", "--tags", "sky", "grass"],
                     ["descriptions", "export", "--out", "data/tag_descriptions.json"], ["export-manifest"]):
            rc, out, err = run_gaudi_cmd("--workspace", ws, *argv, env=env, timeout=180)
            assert rc == 0, (argv, err)
            said.append(out + err)
        assert fake.calls["chat.completions"] >= 1  # the OpenAI key was really used
        # wrong keys are refused in one line that does not repeat them either
        for bad in ({"DANBOORU_API_KEY": WRONG_KEY}, {"OPENAI_API_KEY": WRONG_KEY}):
            argv = ["sync", "--rps", "0", "--max-tries", "1"] if "DANBOORU_API_KEY" in bad else \
                ["descriptions", "suggest", "--provider", "openai", "--tags", "sky"]
            rc, out, err = run_gaudi_cmd("--workspace", ws, *argv, env={**env, **bad}, timeout=180)
            said.append(out + err)
            if "DANBOORU_API_KEY" in bad:
                assert rc != 0 and "401" in err, err
    finally:
        booru.stop()
        fake.stop()

    # a short training job, run as the studio runs jobs (a subprocess with the studio's environment)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    jobs = JobManager(Workspace(ws), poll_s=0.1)
    job = jobs.submit("Stage A", [Step("train-align", ["train-align", "--manifest", "data/manifest.csv",
                                                       "--tag-desc", "data/tag_descriptions.json",
                                                       "--out", "runs/align_audit", *TINY, "--epochs", "1"])])
    t0 = time.time()
    while jobs.get(job.id).status not in FINISHED and time.time() - t0 < 300:
        time.sleep(0.5)
    assert jobs.get(job.id).status == "done", (ws / "runs" / "_jobs" / job.id / "log.txt").read_text()[-2000:]

    # the studio's pages, served with the keys in its environment: masked, never whole
    port = free_port()
    log = tmp_path / "studio.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "launch.py"), "--workspace", str(ws),
                                 "--port", str(port)], cwd=REPO_ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                env=gaudi_env({**env, "GRADIO_ANALYTICS_ENABLED": "False"}), start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}/"
            t0 = time.time()
            while True:
                try:
                    pages = [_fetch(url)]
                    break
                except OSError:
                    assert proc.poll() is None and time.time() - t0 < 120, log.read_text()[-2000:]
                    time.sleep(0.5)
            pages += [_fetch(url + "config"), _fetch(url + "gradio_api/info")]
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert mask_secret(DANBOORU_KEY) in pages[1]  # the Sync tab shows the key masked
    for i, page in enumerate(pages):
        assert not leaks(page), (i, leaks(page))
    said.append(log.read_text())

    for text in said:
        assert not leaks(text), (leaks(text), text[-1500:])
    files = [p for p in ws.rglob("*") if p.is_file()]
    assert any(p.name == "config.json" for p in files) and any(p.name == "job.json" for p in files)
    assert any(p.suffix == ".duckdb" for p in files)
    for p in files:
        assert not leaks(p.read_bytes()), (str(p.relative_to(ws)), leaks(p.read_bytes()))
    assert catalogue_leaks(ws / "data" / "catalogue.duckdb") == []
    # the audit can fail: a key written anywhere is found
    (ws / "runs" / "leak.txt").write_text(f"key={DANBOORU_KEY[:-4]}")  # a truncated key
    assert leaks((ws / "runs" / "leak.txt").read_bytes())
