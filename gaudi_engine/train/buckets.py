"""Batches of one picture shape (aspect-ratio buckets): every training item of a batch is a crop of
the same (h, w), so pictures keep their aspect and nearly all of their area (`imaging.training_shape`)
instead of a square window of each."""
from __future__ import annotations

from collections import defaultdict

import torch


class BucketBatchSampler:
    """Index batches, each from one bucket (`keys[i]`: item i's shape), shuffled per epoch from
    (seed, epoch); under DDP every rank draws the same batch list and takes every world-th one, so
    all ranks run the same number of steps. A bucket's last partial batch is kept unless it holds a
    single item (BatchNorm) or `drop_last` asks for whole batches only."""

    def __init__(self, keys: list, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                 drop_last: bool = False):
        self.groups: dict = defaultdict(list)
        for i, k in enumerate(keys):
            self.groups[k].append(i)
        self.batch_size, self.seed, self.rank, self.world = max(1, batch_size), seed, rank, max(1, world)
        self.drop_last, self.epoch = drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _sizes(self, n: int) -> list[int]:
        full, rest = divmod(n, self.batch_size)
        keep_rest = rest > 1 and not self.drop_last or (full == 0 and rest > 0)
        return [self.batch_size] * full + ([rest] if keep_rest else [])

    def _all(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        batches = []
        for key in sorted(self.groups):
            idx = self.groups[key]
            order = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
            at = 0
            for size in self._sizes(len(order)):
                batches.append(order[at:at + size])
                at += size
        perm = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[j] for j in perm]
        return batches[: len(batches) // self.world * self.world]

    def __iter__(self):
        yield from self._all()[self.rank::self.world]

    def __len__(self) -> int:
        n = sum(len(self._sizes(len(v))) for v in self.groups.values())
        return n // self.world
