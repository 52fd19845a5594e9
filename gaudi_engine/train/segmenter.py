"""Stage B: train the text-conditioned segmenter on accepted pseudo-masks (or, for the oracle,
on ground-truth masks) with the shared training loop.

Targets per image: every accepted (post, tag) mask with an ignore band where the soft score map
is uncertain (near the mask's threshold) and a thin band along the mask's edge; present tags
without an accepted mask are ignored entirely (unknown, not negative); tags absent from the
image are negatives (all-zero target). Loss: BCE + Dice over the valid pixels.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import GaudiError
from ..progress import Progress

log = logging.getLogger(__name__)
IGNORE = 255


@dataclass
class SegTargetsConfig:
    max_pos: int = 8  # present-tag slots per image
    n_neg: int = 4  # absent-tag slots per image
    band: float = 0.15  # |score - threshold| < band -> ignored
    edge: int = 1  # pixels each side of a mask edge -> ignored
    dice_weight: float = 1.0


def _load_plane(path: Path, pre) -> np.ndarray:
    """uint8 [S, S]: a mask or score PNG (at its picture's own size) laid over the model canvas
    where its picture lies (`imaging`); the padding is 0 (no tag there)."""
    from PIL import Image

    from ..imaging import letterbox_plane, picture_box

    with Image.open(path) as im:
        plane = np.asarray(im.convert("L"), np.uint8)
    return letterbox_plane(plane, picture_box((plane.shape[1], plane.shape[0]), pre))


def _load_mask(path: Path, pre) -> np.ndarray:
    return _load_plane(path, pre) > 127


def _load_score(path: Path, pre) -> np.ndarray:
    return _load_plane(path, pre).astype(np.float32) / 255.0


def _edge_band(mask: np.ndarray, width: int) -> np.ndarray:
    from scipy import ndimage

    if width <= 0 or not mask.any():
        return np.zeros_like(mask)
    return ndimage.binary_dilation(mask, iterations=width) & ~ndimage.binary_erosion(mask, iterations=width)


def build_targets(records: list[dict], preprocess, pseudomasks: Path | None = None,
                  gt_masks: Path | None = None, cfg: SegTargetsConfig | None = None) -> dict[int, dict[str, np.ndarray]]:
    """post_id -> {tag: uint8 target [S, S] (0, 1, IGNORE) over the model canvas} for present tags."""
    from ..imaging import Preprocess
    from ..tags import tag_filename

    pre = Preprocess.from_dict(preprocess)
    cfg = cfg or SegTargetsConfig()
    out: dict[int, dict[str, np.ndarray]] = {}
    if gt_masks is not None:
        with Progress("load-masks", total=len(records), unit="post", prelude=True) as bar:
            for rec in records:
                d = {}
                for tag in rec["tags"]:
                    p = Path(gt_masks) / rec["image_path"].stem / f"{tag}.png"
                    if not p.exists():
                        p = Path(gt_masks) / rec["image_path"].stem / tag_filename(tag)
                    if p.exists():
                        d[tag] = _load_mask(p, pre).astype(np.uint8)
                out[rec["post_id"]] = d
                bar.update(1)
        return out
    import pandas as pd

    index = Path(pseudomasks) / "index.parquet"
    if not index.exists():
        raise GaudiError(f"no pseudo-mask index at {index} (run `gaudi pseudolabels` first)")
    df = pd.read_parquet(index)
    df = df[df["accepted"]]
    by_post: dict[int, list] = {}
    for row in df.itertuples(index=False):
        by_post.setdefault(int(row.post_id), []).append(row)
    with Progress("load-masks", total=len(records), unit="post", prelude=True) as bar:
        for rec in records:
            d = {}
            for row in by_post.get(rec["post_id"], []):
                m = _load_mask(Path(pseudomasks) / row.mask_path, pre)
                s = _load_score(Path(pseudomasks) / row.score_path, pre)
                t = np.full(m.shape, 0, np.uint8)
                t[m] = 1
                uncertain = np.abs(s - float(row.threshold)) < cfg.band
                t[uncertain | _edge_band(m, cfg.edge)] = IGNORE
                d[row.tag] = t
            out[rec["post_id"]] = d
            bar.update(1)
    return out


class SegmenterDataset(torch.utils.data.Dataset):
    """uint8 model canvases [N,3,S,S] (`train.data.load_canvas`) + per-image target slots;
    augmentation on tensors."""

    def __init__(self, records: list[dict], targets: dict[int, dict[str, np.ndarray]], vocab: list[str],
                 preprocess: dict, cfg: SegTargetsConfig | None = None, train: bool = True, seed: int = 0,
                 cache=None):
        from ..imaging import Preprocess, training_shape
        from .data import load_canvas

        pre = Preprocess.from_dict(preprocess)
        self.cfg = cfg or SegTargetsConfig()
        self.vocab = list(vocab)
        self.tag_id = {t: i for i, t in enumerate(self.vocab)}
        self.size = pre.image_size
        self.mean = torch.tensor(pre.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(pre.std, dtype=torch.float32).view(3, 1, 1)
        self.train = train
        self.seed = seed
        images, items, self.boxes = [], [], []
        for rec in records:
            loaded = load_canvas(rec, pre, cache)
            if loaded is None:
                continue
            images.append(torch.from_numpy(loaded[0].copy()).permute(2, 0, 1))
            self.boxes.append(loaded[1])
            items.append((rec, targets.get(rec["post_id"], {})))
        if not images:
            raise GaudiError("no readable images with targets to train the segmenter on")
        self.images = images  # uint8 [3,H,W] canvases (aspect kept); targets laid over them alike
        self.items = items
        self.epoch = 0
        # training crops of one shape per batch (`train.buckets`), whole pictures but < a stride
        self.bucket_keys = [training_shape(b, pre) for b in self.boxes] if train else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from ..imaging import picture_window

        rec, tmap = self.items[i]
        rng = random.Random(hash((self.seed, self.epoch, i)) if self.train else i)
        u = (rng.random(), rng.random()) if self.train else None  # the same window of image and targets
        k = self.cfg.max_pos + self.cfg.n_neg
        ids = torch.zeros(k, dtype=torch.long)
        box = self.boxes[i]
        shape = self.bucket_keys[i] if self.bucket_keys else tuple(self.images[i].shape[-2:])
        if self.bucket_keys is None:  # not training: the whole canvas
            box = type(box)(shape[0], shape[1], 0, 0, shape[1], shape[0])
        tgt = torch.full((k, *shape), IGNORE, dtype=torch.uint8)
        pos = [t for t in rec["tags"] if t in tmap and t in self.tag_id]
        if len(pos) > self.cfg.max_pos:
            pos = rng.sample(pos, self.cfg.max_pos)
        for j, t in enumerate(pos):
            ids[j] = self.tag_id[t]
            tgt[j] = torch.from_numpy(picture_window(tmap[t], box, shape, u))
        present = set(rec["tags"])
        absent = [t for t in self.vocab if t not in present]
        for j, t in enumerate(rng.sample(absent, min(self.cfg.n_neg, len(absent)))):
            ids[self.cfg.max_pos + j] = self.tag_id[t]
            tgt[self.cfg.max_pos + j] = 0
        img = picture_window(self.images[i], box, shape, u).float() / 255.0
        if self.train and rng.random() < 0.5:
            img, tgt = img.flip(-1), tgt.flip(-1)
        x = (img - self.mean) / self.std
        return {"image": x, "tag_ids": ids, "target": tgt}


def seg_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """BCE + Dice over valid pixels. logits [B,K,H,W], target uint8 {0,1,IGNORE}."""
    valid = target != IGNORE
    y = (target == 1).float()
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    n_valid = valid.sum().clamp(min=1)
    bce = (bce * valid).sum() / n_valid
    p = torch.sigmoid(logits) * valid
    yv = y * valid
    inter = (p * yv).flatten(2).sum(-1)
    denom = (p + yv).flatten(2).sum(-1)
    has_pos = yv.flatten(2).sum(-1) > 0  # Dice is undefined for negatives: BCE covers them
    dice = (1 - (2 * inter + 1) / (denom + 1))[has_pos]
    dice = dice.mean() if dice.numel() else logits.sum() * 0
    loss = bce + dice_weight * dice
    return loss, {"bce": float(bce.detach()), "dice": float(dice.detach())}


def make_loss_fn(text_emb: torch.Tensor, dice_weight: float = 1.0):
    """loss_fn(model, batch) for train_loop: the segmenter sees the batch's tags' embeddings."""

    def loss_fn(model, batch):
        x = batch["image"]
        emb = text_emb.to(x.device)[batch["tag_ids"]]  # [B,K,D]
        logits = model(x, emb, out_size=x.shape[-2:])
        return seg_loss(logits, batch["target"].to(x.device), dice_weight)

    return loss_fn


def freeze_unused(model: torch.nn.Module, sample: dict, loss_fn) -> list[str]:
    """Freeze parameters the segmenter never uses (text tower, pooling head...), found by one
    backward pass on a sample, so DDP and the optimizer only see what is trained."""
    model.zero_grad(set_to_none=True)
    batch = {k: v[:1] if torch.is_tensor(v) else v for k, v in sample.items()}
    loss, _ = loss_fn(model, batch)
    loss.backward()
    frozen = []
    for name, p in model.named_parameters():
        if p.grad is None:
            p.requires_grad_(False)
            frozen.append(name)
    model.zero_grad(set_to_none=True)
    return frozen


def _set_epoch(self, epoch: int) -> None:
    self.epoch = int(epoch)


SegmenterDataset.set_epoch = _set_epoch

DEFAULTS = {"epochs": 10, "batch_size": 16, "lr": 1e-3, "trunk_lr_scale": 0.3, "dec_dim": 64}


def train_segmenter(manifest, tag_desc, pseudomasks, out, epochs: int | None = None, *, init_from=None,
                    gt_masks=None, batch_size: int | None = None, lr: float | None = None, device: str = "auto",
                    resume: bool = False, seed: int = 0, workers: int = 0, max_steps: int | None = None,
                    log_every: int = 10, targets_cfg: SegTargetsConfig | None = None,
                    save_minutes: float = 10.0) -> dict:
    """Stage B through the shared loop; returns its summary (checkpoint = out/checkpoints/last.pt)."""
    from ..models.checkpoint import load_align, load_checkpoint
    from ..models.segmenter import TextSegmenter, load_segmenter, segmenter_payload
    from ..models.tag_texts import TagTexts
    from ..imaging import cache_for
    from .data import build_vocab, load_tag_descriptions, read_manifest
    from .loop import TrainConfig, saved_config, train_loop

    tcfg = targets_cfg or SegTargetsConfig()
    extra = {"manifest": str(manifest), "tag_desc": str(tag_desc) if tag_desc else None,
             "pseudomasks": str(pseudomasks) if pseudomasks else None, "gt_masks": str(gt_masks) if gt_masks else None,
             "init_from": str(init_from) if init_from else None, "targets": asdict(tcfg),
             "trunk_lr_scale": DEFAULTS["trunk_lr_scale"], "dec_dim": DEFAULTS["dec_dim"]}
    if resume:
        saved = saved_config(out)
        if saved is None:
            raise GaudiError(f"--resume: no checkpoint at {Path(out) / 'checkpoints' / 'last.pt'}"
                             " (a run stopped before its first checkpoint starts again without --resume)")
        extra = dict(saved.get("extra") or extra)
        tcfg = SegTargetsConfig(**extra["targets"])
    if not extra["init_from"]:
        cfg_path = Path(extra["pseudomasks"] or "") / "config.json"
        if not cfg_path.is_file():
            raise GaudiError("pass --init-from ALIGN_CKPT (the pseudo-mask run does not say which align model it used)")
        extra["init_from"] = json.loads(cfg_path.read_text())["align_ckpt"]
    # --init-from: Stage A's align checkpoint (a fresh decoder), or a segmenter checkpoint to go on
    # training (round 2 self-training starts from round 1's segmenter, as in MaskCLIP+); going on
    # needs fewer epochs: on the demo workspace s2 ties s1 at 5 epochs as it did at 10, in half
    # the time the 15-minute budget needs (BENCHMARKS.md, session 3)
    continuing = load_checkpoint(extra["init_from"]).get("kind") == "segmenter"
    default_epochs = DEFAULTS["epochs"] // 2 if continuing else DEFAULTS["epochs"]
    cfg = TrainConfig(out=str(out), epochs=epochs or default_epochs, batch_size=batch_size or DEFAULTS["batch_size"],
                      lr=lr or DEFAULTS["lr"], device=device, seed=seed, workers=workers, resume=resume,
                      log_every=log_every, max_steps=max_steps, save_minutes=save_minutes, stage="train-segmenter",
                      extra=extra)
    records = read_manifest(extra["manifest"])
    torch.manual_seed(seed)
    if continuing:
        bundle = load_segmenter(extra["init_from"], "cpu")
        model = bundle.model.train()
        align = model.align
    else:
        bundle = load_align(extra["init_from"], "cpu")
        align = bundle.model
        model = TextSegmenter(align, dec_dim=int(extra["dec_dim"]))
    descriptions = {**(bundle.descriptions or {}), **load_tag_descriptions(extra["tag_desc"])}
    vocab = list(dict.fromkeys(list(bundle.vocab) + build_vocab(records)))
    texts = TagTexts(align, bundle.vocab, bundle.text_emb, descriptions)
    text_emb = texts.get(vocab).detach().cpu()
    targets = build_targets(records, bundle.preprocess, Path(extra["pseudomasks"]) if extra["pseudomasks"] else None,
                            Path(extra["gt_masks"]) if extra["gt_masks"] else None, tcfg)
    n_pos = sum(len(v) for v in targets.values())
    if n_pos == 0:
        raise GaudiError("no accepted masks to train on (every pseudo-mask was rejected?)")
    dataset = SegmenterDataset(records, targets, vocab, bundle.preprocess, tcfg, train=True, seed=seed,
                               cache=cache_for(extra["manifest"]))
    loss_fn = make_loss_fn(text_emb, tcfg.dice_weight)
    sample = torch.utils.data.default_collate([dataset[0]])
    model.train()
    freeze_unused(model, sample, loss_fn)
    base = {"kind": "align", **align.export_config(), "vocab": vocab, "text_emb": text_emb,
            "descriptions": descriptions}
    trunk_scale = float(extra["trunk_lr_scale"])

    def lr_scale(name: str) -> float:  # Stage A's tower moves slower than the fresh decoder
        return trunk_scale if name.startswith("align.") else 1.0

    summary = train_loop(cfg, model, dataset, loss_fn, make_payload=lambda m: segmenter_payload(m, base),
                         lr_scale=lr_scale)
    summary.update(vocab_size=len(vocab), images=len(dataset), masks=n_pos)
    return summary
