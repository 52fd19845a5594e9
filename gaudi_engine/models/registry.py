"""Model registry: the project's open_clip configs (`gaudi-lite0`, `gaudi-lite2`, `gaudi-tiny`,
registered with `open_clip.add_model_config`) and `create_align_model`, the one entry point that builds an
AlignModel from any open_clip model name plus optional pretrained weights (tag or local file)."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from ..errors import GaudiError

CONFIG_DIR = Path(__file__).with_name("model_configs")
DEFAULT_MODEL = "gaudi-lite0"
_MEAN_STD_HALF = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}

# What open_clip's config schema has no room for: preprocessing and how the trunk starts.
GAUDI_EXTRAS: dict[str, dict[str, Any]] = {
    "gaudi-lite0": {**_MEAN_STD_HALF, "trunk_init": "lite0_imagenet"},
    "gaudi-lite2": {**_MEAN_STD_HALF, "trunk_init": "lite2_imagenet"},
    "gaudi-tiny": {**_MEAN_STD_HALF, "trunk_init": None},
    "gaudi-vit-tiny": {**_MEAN_STD_HALF, "trunk_init": None},  # a random-init ViT, for tests
}
_registered = False


def register_configs() -> None:
    """Make the project's configs visible to open_clip (`list_models()`, `create_model`)."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def list_models() -> list[str]:
    register_configs()
    import open_clip

    return open_clip.list_models()


def model_config(model_name: str) -> dict[str, Any]:
    register_configs()
    import open_clip

    cfg = open_clip.get_model_config(model_name.replace("/", "-"))
    if cfg is None:
        names = ", ".join(m for m in list_models() if m.startswith("gaudi")) + ", ViT-B-16, ..."
        raise GaudiError(f"unknown model '{model_name}' (known: {names}; see open_clip.list_models())")
    return copy.deepcopy(cfg)


def build_clip(model_cfg: dict[str, Any], lean: bool = False):
    """An open_clip CLIP/CustomTextCLIP from a config dict (random init, no downloads). `lean`:
    for weights a checkpoint is about to overwrite, the same model from torch.nn alone when
    `lean.supports` the config (gaudi-lite0, gaudi-lite2): no open_clip/timm/torchvision imports
    (~4 s), on the meta device, to be filled with `load_state_dict(state, assign=True)`."""
    if lean:
        from . import lean as lean_towers

        if lean_towers.supports(model_cfg):
            return lean_towers.build_lean_clip(model_cfg)
    import open_clip

    cfg = copy.deepcopy(model_cfg)
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"]["timm_model_pretrained"] = False  # the hub is not ours to reach
    if "hf_model_name" in cfg.get("text_cfg", {}):
        cfg["text_cfg"]["hf_model_pretrained"] = False
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    if "multimodal_cfg" in cfg:
        raise GaudiError("CoCa-style models are not supported; pick a plain CLIP model")
    cls = open_clip.CustomTextCLIP if custom else open_clip.CLIP
    try:
        return cls(**cfg)
    except TypeError as exc:
        raise GaudiError(f"cannot build an open_clip model from this config: {exc}") from exc


def _preprocess_for(model_name: str, pretrained: str | None, image_size: int) -> dict[str, Any]:
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    extras = GAUDI_EXTRAS.get(model_name, {})
    mean, std = extras.get("mean", list(OPENAI_DATASET_MEAN)), extras.get("std", list(OPENAI_DATASET_STD))
    if pretrained and not os.path.isfile(pretrained):
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
        mean, std = list(tag_cfg.get("mean", mean)), list(tag_cfg.get("std", std))
    return {"image_size": int(image_size), "mean": [float(v) for v in mean],
            "std": [float(v) for v in std], "interpolation": "bilinear"}


def _load_pretrained(clip, model_name: str, pretrained: str) -> None:
    import open_clip
    import torch

    if os.path.isfile(pretrained):
        try:
            obj = torch.load(pretrained, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise GaudiError(f"cannot read pretrained weights {pretrained}: {type(exc).__name__}") from exc
        if isinstance(obj, dict) and obj.get("kind") == "align":  # a GaUDI checkpoint: its CLIP part
            obj = {k[len("clip."):]: v for k, v in obj["state_dict"].items() if k.startswith("clip.")}
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
        from open_clip.model import resize_pos_embed, resize_text_pos_embed

        resize_pos_embed(sd, clip)
        resize_text_pos_embed(sd, clip)
        try:
            clip.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise GaudiError(f"pretrained file {pretrained} does not match model '{model_name}': "
                             f"{' '.join(first[:2])[:300]}") from exc
        return
    tag_cfg = _check_tag(model_name, pretrained)
    try:
        path = open_clip.download_pretrained(tag_cfg)
    except Exception as exc:
        raise GaudiError(f"could not fetch pretrained weights '{pretrained}' for '{model_name}' "
                         f"(no network?); download them elsewhere and pass --pretrained /path/to/file") from exc
    if not path:
        raise GaudiError(f"no download location for pretrained '{pretrained}' of '{model_name}'; "
                         f"pass --pretrained /path/to/file")
    open_clip.load_checkpoint(clip, path, strict=True, weights_only=True)


def _check_tag(model_name: str, pretrained: str) -> dict[str, Any]:
    """The open_clip pretrained config of a tag, checked (cheaply, before building a model)."""
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise GaudiError(f"pretrained '{pretrained}' is neither a file nor a known tag of '{model_name}'"
                         f" (tags: {', '.join(tags) or 'none'})")
    if not _hub_reachable(tag_cfg):
        raise GaudiError(f"pretrained weights '{pretrained}' for '{model_name}' are not cached and the hub "
                         f"is unreachable (no network?); download them elsewhere and pass "
                         f"--pretrained /path/to/file")
    return tag_cfg


def _hub_reachable(tag_cfg: dict[str, Any]) -> bool:
    """True when the weights are cached or their host answers: without this, huggingface_hub
    retries for about a minute before failing on a machine with no network."""
    import socket
    from urllib.parse import urlparse

    hub = tag_cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache

            repo, filename = os.path.split(hub)
            for name in ([filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]):
                if isinstance(try_to_load_from_cache(repo, name), str):
                    return True
        except Exception:
            pass
        host = "huggingface.co"
    else:
        host = urlparse(tag_cfg.get("url", "")).hostname or ""
    if not host:
        return True
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def create_align_model(model_name: str = DEFAULT_MODEL, pretrained: str | None = None,
                       image_size: int | None = None, embed_dim: int | None = None, **align_kwargs):
    """Build an AlignModel. `pretrained`: None (the config's default start: ImageNet trunk for
    gaudi-lite0/gaudi-lite2, random otherwise), "none"/"scratch" (random), an open_clip tag, or a
    local file (an open_clip state dict, or a GaUDI align checkpoint). `image_size` defaults to the
    config's."""
    from .align import AlignModel
    from .lite_weights import load_lite_imagenet

    model_name = model_name.replace("/", "-")
    cfg = model_config(model_name)
    vis = cfg["vision_cfg"]
    if image_size is None:
        image_size = vis.get("image_size", 224)
        image_size = image_size if isinstance(image_size, int) else image_size[0]
    vis["image_size"] = int(image_size)
    if embed_dim is not None:
        cfg["embed_dim"] = int(embed_dim)
    if pretrained in ("none", "scratch", ""):
        pretrained, trunk_init = None, None
    else:
        trunk_init = GAUDI_EXTRAS.get(model_name, {}).get("trunk_init") if pretrained is None else None
    if pretrained and not os.path.isfile(pretrained):
        _check_tag(model_name, pretrained)  # fail in a second, not after building a big model
    clip = build_clip(cfg)
    if pretrained:
        _load_pretrained(clip, model_name, pretrained)
    if trunk_init:
        load_lite_imagenet(clip.visual.trunk, trunk_init)
    preprocess = _preprocess_for(model_name, pretrained, int(image_size))
    align_cfg = {"init": pretrained or trunk_init or "random", **align_kwargs}
    return AlignModel(clip, model_name=model_name, model_cfg=cfg, preprocess_cfg=preprocess,
                      align_cfg=align_cfg)
