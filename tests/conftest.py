"""Shared fixtures (used by every engineer's tests; keep their signatures stable):

- `workspace`   a fresh `Workspace` in a tmp folder (folders created).
- `catalogue`   the workspace's catalogue opened in this process, closed after the test.
- `booru`       factory: `booru(n_posts=0, seed=0, faults=None, auth=None, **add_fake_posts_kwargs)`
                -> a started `LocalBooru` on a free loopback port (stopped after the test).
                `faults` may be a FaultPlan, or a float rate (-> FaultPlan(rate, seed)).
- `run_gaudi`   `run_gaudi(*args, env=None, timeout=120, input=None) -> (rc, stdout, stderr)`: runs
                `python -m gaudi_engine ARGS` as a subprocess from the repository root, with a clean
                environment (no real Danbooru/OpenAI credentials leak in); `env` adds/overrides.

`run_gaudi_many(*argvs)` runs several independent `gaudi` calls two at a time (see there).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

_SECRET_ENV = ("DANBOORU_BASE_URL", "DANBOORU_USERNAME", "DANBOORU_API_KEY", "DANBOORU_USER_AGENT",
               "DANBOORU_RPS", "OPENAI_API_KEY", "OPENAI_BASE_URL", "GAUDI_WORKSPACE", "GAUDI_DEBUG")


def gaudi_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a `gaudi` subprocess: this one minus credentials, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # one thread whatever the caller's shell says: the kill/resume tests compare two runs bit for
    # bit, and a multi-threaded reduction sums in another order (seen with OMP_NUM_THREADS=2)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra or {})
    return env


def run_gaudi_cmd(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
                  input: str | None = None, cwd: str | os.PathLike | None = None) -> tuple[int, str, str]:
    """Run `python -m gaudi_engine *args`; returns (returncode, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "gaudi_engine", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, input=input,
                          env=gaudi_env(env), cwd=cwd or REPO_ROOT)
    return proc.returncode, proc.stdout, proc.stderr


def run_gaudi_many(*argvs, env: dict[str, str] | None = None, timeout: float = 120,
                   workers: int = 2) -> list[tuple[int, str, str]]:
    """`run_gaudi_cmd(*argv)` for each argv, `workers` at a time; the results in argv order.

    For a test's INDEPENDENT calls only (none reads what another writes). Each call is still its own
    `python -m gaudi_engine` process, checked as before; most of one's time is single-threaded
    start-up (importing torch), so two at a time keep both of a 2-core machine's cores busy."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_gaudi_cmd, *argv, env=env, timeout=timeout) for argv in argvs]
        return [f.result() for f in futures]


def gaudi_popen(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """Start `python -m gaudi_engine *args` without waiting (for kill-and-resume tests)."""
    return subprocess.Popen([sys.executable, "-m", "gaudi_engine", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=gaudi_env(env), cwd=REPO_ROOT, **kwargs)


@pytest.fixture
def workspace(tmp_path):
    from gaudi_engine.workspace import Workspace

    return Workspace(tmp_path / "ws").ensure()


@pytest.fixture
def catalogue(workspace):
    from gaudi_engine.catalogue import open_catalogue

    cat = open_catalogue(workspace.catalogue_path)
    yield cat
    cat.close()


@pytest.fixture
def booru():
    from gaudi_engine.booru.local_booru import LocalBooru
    from tests.fakes.danbooru import FaultPlan, add_fake_posts

    started: list[LocalBooru] = []

    def make(n_posts: int = 0, seed: int = 0, faults=None, auth: tuple[str, str] | None = None,
             block_generic_user_agents: bool = False, **post_kwargs) -> LocalBooru:
        b = LocalBooru(auth=auth, block_generic_user_agents=block_generic_user_agents)
        if n_posts:
            add_fake_posts(b, n_posts, seed=seed, **post_kwargs)
        if isinstance(faults, (int, float)):
            faults = FaultPlan(rate=float(faults), seed=seed + 1)
        b.faults = faults
        b.start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def run_gaudi():
    return run_gaudi_cmd
