"""Workers end with the command that started them when it is killed with SIGKILL: shard processes
(`subprocess.Popen` + `dies_with_this_process`) and process pools (`die_with_parent` initializer)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, gaudi_env
from tests.killing import assert_ended, running

POPEN_PARENT = """
import subprocess, sys, time
from gaudi_engine.child_process import dies_with_this_process
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], preexec_fn=dies_with_this_process())
print(child.pid, flush=True)
time.sleep(120)
"""

POOL_PARENT = """
import multiprocessing, os, time
from concurrent.futures import ProcessPoolExecutor
from gaudi_engine.child_process import die_with_parent
if __name__ == "__main__":
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))
    futures = [pool.submit(time.sleep, 0.2) for _ in range(4)]
    [f.result() for f in futures]
    print(" ".join(str(p) for p in pool._processes), flush=True)
    time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("script", [POPEN_PARENT, POOL_PARENT], ids=["popen", "process-pool"])
def test_workers_end_when_their_parent_is_killed(script, tmp_path):
    path = tmp_path / "parent.py"
    path.write_text(script)
    parent = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True,
                              env=gaudi_env(), cwd=REPO_ROOT)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert workers and all(running(p) for p in workers)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
    assert_ended(workers, within=10)
