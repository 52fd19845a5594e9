"""Tokenizer for an AlignModel's text tower, built from its open_clip config dict alone (so a
checkpoint needs nothing else): open_clip's bundled BPE unless the config names an HF tokenizer."""
from __future__ import annotations

from typing import Any, Callable

import torch


def build_tokenizer(model_cfg: dict[str, Any]) -> Callable[[list[str]], torch.Tensor]:
    text_cfg = model_cfg.get("text_cfg", {})
    ctx = int(text_cfg.get("context_length", 77))
    hf_name = text_cfg.get("hf_tokenizer_name")
    if hf_name:  # e.g. SigLIP / HF text towers: needs the tokenizer files cached locally
        import open_clip

        return open_clip.tokenizer.HFTokenizer(hf_name, context_length=ctx,
                                               **text_cfg.get("tokenizer_kwargs", {}))
    return _tokenizer_module().SimpleTokenizer(context_length=ctx, **text_cfg.get("tokenizer_kwargs", {}))


def _tokenizer_module():
    """open_clip.tokenizer; when open_clip is not imported yet, `_standalone_tokenizer()`."""
    import sys

    if "open_clip" in sys.modules:
        import open_clip.tokenizer

        return open_clip.tokenizer
    return _standalone_tokenizer()


def _standalone_tokenizer():
    """open_clip's tokenizer.py alone (it imports nothing else of open_clip), under a private name:
    importing the open_clip package would pull in torchvision, timm and torch._dynamo (~4 s) that
    tokenizing never uses. The same code, so the same tokens."""
    import importlib.util
    import sys

    name = "gaudi_engine.models._open_clip_tokenizer"
    if name not in sys.modules:
        spec = importlib.util.find_spec("open_clip")
        path = next(iter(spec.submodule_search_locations or []), None) if spec else None
        if path is None:  # not a plain folder: let the import system say what is wrong
            import open_clip.tokenizer

            return open_clip.tokenizer
        file_spec = importlib.util.spec_from_file_location(name, f"{path}/tokenizer.py")
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[name] = module
        try:
            file_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def description_texts(descriptions: dict[str, list[str]], tag: str) -> list[str]:
    """A tag's texts: its descriptions, or its own name (underscores → spaces) when it has none."""
    texts = [t for t in descriptions.get(tag, []) if t and t.strip()]
    return texts or [tag.replace("_", " ")]
