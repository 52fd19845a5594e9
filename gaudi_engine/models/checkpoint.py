"""Checkpoint I/O. A checkpoint is one `torch.save`d dict of weights_only-safe values (tensors,
dicts, lists, str, int, float, bool, None) carrying everything needed to rebuild and use the model:
kind, model_name, model_cfg (open_clip config), align_cfg, preprocess, state_dict, vocab, text_emb,
descriptions, train_config, epoch, step.

A training run writes two files each epoch (`save_run_checkpoints`), each atomically:
checkpoints/model.pt, the export (the above: what infer, pseudolabels and --init-from read), and
checkpoints/last.pt, the same plus the resume state (optimizer, scheduler, scaler, rng: what
--resume reads). Any of them loads for inference, so runs from before the split (last.pt only)
still work, and `resolve_checkpoint` turns a run folder or a missing model.pt into what exists."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import GaudiError


EXPORT_NAME = "model.pt"  # the model: what everything that uses a trained model reads
RESUME_NAME = "last.pt"  # the model + resume state: what --resume reads
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng")  # in last.pt only


def export_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint payload without its resume state (optimizer, scheduler, scaler, rng)."""
    return {k: v for k, v in payload.items() if k not in RESUME_KEYS}


def save_run_checkpoints(ckpt_dir: str | os.PathLike, payload: dict[str, Any]) -> tuple[Path, Path]:
    """A run's two files, each written atomically: last.pt (the full payload, for --resume), then
    model.pt (the export). Returns (model.pt, last.pt)."""
    ckpt_dir = Path(ckpt_dir)
    resume = save_checkpoint(ckpt_dir / RESUME_NAME, payload)
    return save_checkpoint(ckpt_dir / EXPORT_NAME, export_payload(payload)), resume


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file a path names: a file as given; a run folder (or its checkpoints/
    folder) -> its model.pt (last.pt for a run from before model.pt existed); a model.pt that is
    missing beside an existing last.pt -> that last.pt (an older run). Else the path unchanged."""
    path = Path(path)
    if path.is_dir():
        for d in (path / "checkpoints", path):
            for name in (EXPORT_NAME, RESUME_NAME):
                if (d / name).is_file():
                    return d / name
        return path
    if not path.exists() and path.name == EXPORT_NAME and (path.parent / RESUME_NAME).is_file():
        return path.parent / RESUME_NAME
    return path


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write atomically (temp file in the same folder, then os.replace): a reader never sees half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True; a missing, corrupt or foreign file is one GaudiError line.
    `path` may also be a run folder or a model.pt an older run lacks (`resolve_checkpoint`)."""
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise GaudiError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise GaudiError(f"cannot read checkpoint {path}: corrupt or not a GaUDI checkpoint ({reason})") from exc
    if not isinstance(payload, dict) or "kind" not in payload or "state_dict" not in payload:
        raise GaudiError(f"{path} is not a GaUDI checkpoint (no 'kind'/'state_dict')")
    return payload


@dataclass
class AlignBundle:
    model: Any                     # AlignModel, eval mode, on the requested device
    config: dict[str, Any]         # model_name, model_cfg, align_cfg, preprocess, train_config, epoch, step
    preprocess: dict[str, Any]     # image_size, mean, std, interpolation
    vocab: list[str]
    text_emb: torch.Tensor         # [K,D] for vocab, normalised
    descriptions: dict[str, list[str]] = field(default_factory=dict)


def _default_strides(shape) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= max(int(d), 1)
    return tuple(reversed(out))


def plain_layout(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`t` as a freshly made parameter (of `dtype`) would hold it after a copy: default row-major
    strides. A conv weight of a channels_last model keeps its strides through torch.save, and a
    weight's strides choose the convolution kernels (different last bits): train_loop saves plain
    tensors, and loading makes an older checkpoint's plain (a copy only where needed)."""
    dtype = dtype or t.dtype
    if t.dtype == dtype and t.stride() == _default_strides(t.shape):
        return t
    return torch.empty(t.shape, dtype=dtype, device=t.device).copy_(t)


def align_model_from_payload(payload: dict[str, Any], path: str | os.PathLike | None = None):
    """Rebuild the AlignModel of an align checkpoint (or of the align part a segmenter carries)
    with its weights. gaudi-lite0 is rebuilt from torch.nn alone (models/lean.py: the same modules
    and numbers without open_clip's ~4 s of imports), on the meta device, and takes the
    checkpoint's tensors as its weights (no init, no copy); other models are built by open_clip."""
    from .align import AlignModel
    from .registry import build_clip

    try:
        clip = build_clip(payload["model_cfg"], lean=True)
        model = AlignModel(clip, model_name=payload["model_name"], model_cfg=payload["model_cfg"],
                           preprocess_cfg=payload["preprocess"], align_cfg=payload.get("align_cfg"))
    except KeyError as exc:
        raise GaudiError(f"checkpoint lacks {exc} — not an align checkpoint") from exc
    state = payload["state_dict"]
    if payload.get("kind") == "segmenter":
        state = {k[len("align."):]: v for k, v in state.items() if k.startswith("align.")}
    own = model.state_dict(keep_vars=True)
    state = {k: plain_layout(v, own[k].dtype) if k in own and torch.is_tensor(v) else v for k, v in state.items()}
    where = f"checkpoint {path}" if path else "the checkpoint"
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise GaudiError(f"{where} does not match its own model config: {str(exc).splitlines()[0][:200]}") from exc
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:  # cannot happen with strict=True unless a lean tower grows a buffer it does not make
        raise GaudiError(f"{where} leaves {left[0]} unset")
    return model


def load_align(path: str | os.PathLike, device: str | torch.device = "cpu") -> AlignBundle:
    payload = load_checkpoint(path)
    if payload.get("kind") != "align":
        raise GaudiError(f"{path} is a '{payload.get('kind')}' checkpoint, not an align (Stage A) one")
    model = align_model_from_payload(payload, path)
    model.to(device).eval()
    config = {k: payload.get(k) for k in ("model_name", "model_cfg", "align_cfg", "preprocess",
                                          "train_config", "epoch", "step")}
    vocab = list(payload.get("vocab") or [])
    text_emb = payload.get("text_emb")
    if text_emb is None:
        text_emb = torch.zeros(0, model.embed_dim)
    return AlignBundle(model=model, config=config, preprocess=dict(payload["preprocess"]), vocab=vocab,
                       text_emb=text_emb.to(device), descriptions=dict(payload.get("descriptions") or {}))
