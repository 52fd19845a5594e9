"""Worker processes that end with the command that started them.

A `kill -9` of a command reaches that process only: its shard workers (`pseudolabels --workers`)
would go on labelling and writing the run's files while a rerun starts its own, and parsing
workers (`import-metadata --workers`) would wait forever on a queue nobody feeds. Each worker
therefore asks the kernel to SIGKILL it when its parent ends (Linux's PR_SET_PDEATHSIG; other
systems keep the old behaviour) and exits at once when the parent is already gone.
"""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from typing import Callable

_PR_SET_PDEATHSIG = 1


@functools.lru_cache(maxsize=1)
def _prctl() -> Callable | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(parent_pid: int) -> None:
    """Called in the worker: be killed when `parent_pid` ends; exit now if it already has."""
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def dies_with_this_process() -> Callable[[], None]:
    """A `preexec_fn` for `subprocess.Popen` (the setting survives the exec): the child ends when
    this process does. libc is looked up here, before the fork, not in the child."""
    _prctl()
    return functools.partial(die_with_parent, os.getpid())


def pid_alive(pid: int) -> bool:
    """A process with this pid runs on this machine (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
