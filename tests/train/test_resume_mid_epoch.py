"""Resuming the training loop exactly: last.pt is also saved inside an epoch (every `save_every`
steps, or every `save_minutes`), so a run stopped mid-epoch resumes after the batches it had done —
same batches, same weights, same log as an uninterrupted run — instead of redoing the epoch; and a
loss that samples with its own generator (Stage A's negative tags) resumes its draws too."""
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


def make_sampling_loss(picked: list[list[int]]):
    """A loss that samples with its own generator (as Stage A samples negative tags)."""
    gen = torch.Generator().manual_seed(1)

    def loss_fn(model, batch):
        keep = torch.randperm(len(batch["i"]), generator=gen)[: len(batch["i"]) // 2]
        picked.append(keep.tolist())
        if len(picked) == 8 and getattr(loss_fn, "stop", False):
            raise Stop()
        return torch.nn.functional.binary_cross_entropy_with_logits(model(batch["x"][keep]), batch["y"][keep]), {}

    loss_fn.state_dict = lambda: {"gen": gen.get_state()}
    loss_fn.load_state_dict = lambda st: gen.set_state(st["gen"])
    return loss_fn


def test_a_loss_with_its_own_generator_resumes_its_draws(tmp_path):
    def go(out, loss_fn, resume=False):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        cfg = TrainConfig(out=str(out), epochs=EPOCHS, batch_size=BATCH, device="cpu", resume=resume,
                          channels_last=False, save_every=2, save_minutes=0)
        train_loop(cfg, model, Points(), loss_fn)

    straight: list[list[int]] = []
    go(tmp_path / "straight", make_sampling_loss(straight))
    cut: list[list[int]] = []
    stopping = make_sampling_loss(cut)
    stopping.stop = True
    with pytest.raises(Stop):  # in step 8: last.pt holds step 6
        go(tmp_path / "cut", stopping)
    rest: list[list[int]] = []
    go(tmp_path / "cut", make_sampling_loss(rest), resume=True)
    assert rest == straight[6:]  # the generator went on from step 6, not from its seed
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "model.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "model.pt")["state_dict"]
    assert all(torch.allclose(v, b[k], atol=1e-6) for k, v in a.items())


def test_stage_a_sampling_negatives_resumes_exactly(tmp_path, monkeypatch):
    """Stage A over more tags than a step embeds samples negatives with its own generator: a run
    stopped after its first epoch resumes to the uninterrupted run's weights."""
    from gaudi_engine import synth
    from gaudi_engine.train import align as stage_a

    info = synth.generate(tmp_path / "data", 24, seed=0, size=(64, 80), write_gt=False)
    # a batch of 2 pictures shows ~9 of the 18 tags: the rest of the 14 a step embeds are sampled
    monkeypatch.setitem(stage_a.DEFAULTS, "max_tags_per_step", 14)
    kw = dict(model_name="gaudi-tiny", image_size=64, device="cpu", epochs=2, batch_size=2, save_minutes=0)
    stage_a.train_align(info["manifest"], info["tag_descriptions"], tmp_path / "straight", **kw)
    real_set_epoch = stage_a.TagImageDataset.set_epoch

    def stop_in_second_epoch(self, epoch):
        if epoch == 1:
            raise Stop()
        real_set_epoch(self, epoch)

    monkeypatch.setattr(stage_a.TagImageDataset, "set_epoch", stop_in_second_epoch)
    with pytest.raises(Stop):
        stage_a.train_align(info["manifest"], info["tag_descriptions"], tmp_path / "cut", **kw)
    monkeypatch.setattr(stage_a.TagImageDataset, "set_epoch", real_set_epoch)
    stage_a.train_align(None, None, tmp_path / "cut", resume=True, device="cpu")
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "model.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "model.pt")["state_dict"]
    for k, v in a.items():
        assert torch.allclose(v.float(), b[k].float(), atol=1e-5), k
