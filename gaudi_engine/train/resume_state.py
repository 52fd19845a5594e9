"""What a training run saves to go on after a kill, and how it goes on (`train.loop`): the RNG
state, last.pt's payload, and the epoch's batch order without the batches already done."""
from __future__ import annotations

import itertools
import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..models.checkpoint import plain_layout


def rng_state() -> dict[str, Any]:
    """torch, Python, NumPy (and CUDA) generator states, as tensors and lists `weights_only` loads."""
    st = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0], "numpy_keys": torch.from_numpy(st[1].astype(np.int64)),
            "numpy_pos": int(st[2]),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(st: dict[str, Any], loss_fn: Callable | None = None) -> None:
    """Put back the generator states `rng_state` (and `checkpoint_payload`, for `loss_fn`) saved."""
    if st.get("loss") is not None and hasattr(loss_fn, "load_state_dict"):
        loss_fn.load_state_dict(st["loss"])
    torch.set_rng_state(st["torch"])
    random.setstate((st["python_version"], tuple(st["python"]), None))
    np.random.set_state(("MT19937", st["numpy_keys"].numpy().astype(np.uint32), st["numpy_pos"], 0, 0.0))
    if st.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def epoch_order(dataset, sampler, epoch: int, seed: int) -> torch.utils.data.Sampler:
    """The epoch's item order: the DDP sampler's, else a permutation seeded by the epoch (so a run
    resumed inside an epoch draws the same batches as an uninterrupted one)."""
    if sampler is not None:
        sampler.set_epoch(epoch)
        return sampler
    return torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed * 1000 + epoch))


class SkipBatches:
    """A batch sampler without its first `skip` batches (resuming inside an epoch)."""

    def __init__(self, batches: torch.utils.data.Sampler, skip: int):
        self.batches, self.skip = batches, skip

    def __iter__(self):
        return itertools.islice(iter(self.batches), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.skip)


def checkpoint_payload(model: torch.nn.Module, make_payload: Callable[[torch.nn.Module], dict] | None, cfg,
                       epoch: int, step: int, opt: torch.optim.Optimizer, sched, scaler, loss_fn: Callable,
                       **extra: Any) -> dict[str, Any]:
    """What last.pt holds: the model's payload + the run config and everything --resume restores.
    A loss function with its own generator (`state_dict` / `load_state_dict` attributes) has its
    state saved with the run's RNG (`rng["loss"]`)."""
    payload = make_payload(model) if make_payload else {"kind": "generic", "state_dict": model.state_dict()}
    payload["state_dict"] = {k: plain_layout(v.detach().cpu()) for k, v in payload["state_dict"].items()}
    rng = rng_state()
    if hasattr(loss_fn, "state_dict"):
        rng["loss"] = loss_fn.state_dict()
    payload.update(train_config=asdict(cfg), epoch=epoch, step=step, optimizer=opt.state_dict(),
                   scheduler=sched.state_dict(), scaler=scaler.state_dict(), rng=rng, **extra)
    return payload


def remove_partial_checkpoints(ckpt_dir: str | os.PathLike) -> int:
    """Delete the temp files of checkpoints a killed run was writing (`save_checkpoint` writes
    `NAME.pt.<random>.tmp`, then renames it): each is as large as a checkpoint and nobody else
    would ever remove it. Call only while no other process writes this run. Returns the count."""
    removed = 0
    for tmp in Path(ckpt_dir).glob("*.pt.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed
