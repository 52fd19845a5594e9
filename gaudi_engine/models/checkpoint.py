"""Checkpoint I/O. A checkpoint is one `torch.save`d dict of weights_only-safe values (tensors,
dicts, lists, str, int, float, bool, None) carrying everything needed to rebuild and use the model:
kind, model_name, model_cfg (open_clip config), align_cfg, preprocess, state_dict, vocab, text_emb,
descriptions, train_config, epoch, step (+ optimizer/scheduler/rng for --resume)."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import GaudiError


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
    """Load with weights_only=True; a missing, corrupt or foreign file is one GaudiError line."""
    path = Path(path)
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


def align_model_from_payload(payload: dict[str, Any]):
    """Rebuild the AlignModel of an align checkpoint (or of the align part a segmenter carries)."""
    from .align import AlignModel
    from .registry import build_clip

    try:
        clip = build_clip(payload["model_cfg"])
        model = AlignModel(clip, model_name=payload["model_name"], model_cfg=payload["model_cfg"],
                           preprocess_cfg=payload["preprocess"], align_cfg=payload.get("align_cfg"))
    except KeyError as exc:
        raise GaudiError(f"checkpoint lacks {exc} — not an align checkpoint") from exc
    return model


def load_align(path: str | os.PathLike, device: str | torch.device = "cpu") -> AlignBundle:
    payload = load_checkpoint(path)
    if payload.get("kind") != "align":
        raise GaudiError(f"{path} is a '{payload.get('kind')}' checkpoint, not an align (Stage A) one")
    model = align_model_from_payload(payload)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise GaudiError(f"checkpoint {path} does not match its own model config: "
                         f"{str(exc).splitlines()[0][:200]}") from exc
    model.to(device).eval()
    config = {k: payload.get(k) for k in ("model_name", "model_cfg", "align_cfg", "preprocess",
                                          "train_config", "epoch", "step")}
    vocab = list(payload.get("vocab") or [])
    text_emb = payload.get("text_emb")
    if text_emb is None:
        text_emb = torch.zeros(0, model.embed_dim)
    return AlignBundle(model=model, config=config, preprocess=dict(payload["preprocess"]), vocab=vocab,
                       text_emb=text_emb.to(device), descriptions=dict(payload.get("descriptions") or {}))
