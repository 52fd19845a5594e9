"""The training loop saves last.pt inside an epoch (every `save_every` steps, or every
`save_minutes`): a run stopped mid-epoch resumes after the batches it had done — same batches,
same weights as an uninterrupted run — instead of redoing the epoch."""
from __future__ import annotations

import pytest
import torch

from gaudi_engine.models.checkpoint import load_checkpoint
from gaudi_engine.train.loop import TrainConfig, train_loop
from tests.killing import jsonl_records

N, BATCH, EPOCHS = 40, 8, 2  # 5 steps an epoch


class Points(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(N, 6, generator=g)
        self.y = (self.x[:, :1] > 0).float()

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "i": i}


class Stop(Exception):
    pass


def make_loss(seen: list[int], stop_at: int | None = None):
    def loss_fn(model, batch):
        if stop_at is not None and len(seen) == stop_at:
            raise Stop()
        seen.extend(int(i) for i in batch["i"])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch["x"]), batch["y"])
        return loss, {}
    return loss_fn


def run(out, seen, stop_at=None, resume=False, **save):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    cfg = TrainConfig(out=str(out), epochs=EPOCHS, batch_size=BATCH, device="cpu", resume=resume, log_every=1,
                      channels_last=False, **save)
    return train_loop(cfg, model, Points(), make_loss(seen, stop_at))


@pytest.mark.parametrize("save", [{"save_every": 2, "save_minutes": 0}, {"save_minutes": 1e-9}],
                         ids=["every-2-steps", "every-moment"])
def test_stopped_mid_epoch_resumes_after_the_batches_it_had_done(tmp_path, save):
    straight: list[int] = []
    run(tmp_path / "straight", straight, save_minutes=0)
    first: list[int] = []
    with pytest.raises(Stop):  # stopped in epoch 1 before its 4th step (step 8 of 10)
        run(tmp_path / "cut", first, stop_at=7 * BATCH, **save)
    last = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    saved_step = 6 if "save_every" in save else 7
    assert (last["epoch"], last["step"], last["batches_in_epoch"]) == (1, saved_step, saved_step - 5)
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "model.pt")["step"] == 5  # an epoch's model
    rest: list[int] = []
    summary = run(tmp_path / "cut", rest, resume=True, **save)
    assert summary["steps"] == 10 and summary["epochs"] == EPOCHS
    # the resumed run drew exactly the batches the uninterrupted run drew after the saved step
    assert rest == straight[saved_step * BATCH:]
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "model.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "model.pt")
    assert "batches_in_epoch" not in b
    for k, v in a["state_dict"].items():
        assert torch.allclose(v.float(), b["state_dict"][k].float(), atol=1e-6), k
    # the log reads like the uninterrupted run's: each step once, the same epoch losses
    cut = jsonl_records(tmp_path / "cut" / "metrics.jsonl")
    whole = jsonl_records(tmp_path / "straight" / "metrics.jsonl")
    assert [r["step"] for r in cut if "loss" in r] == list(range(1, 11))
    assert [r["epoch_loss"] for r in cut if "epoch_loss" in r] == \
        pytest.approx([r["epoch_loss"] for r in whole if "epoch_loss" in r], abs=1e-6)
