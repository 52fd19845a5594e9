"""Tokenizer for an AlignModel's text tower, built from its open_clip config dict alone (so a
checkpoint needs nothing else): open_clip's bundled BPE unless the config names an HF tokenizer."""
from __future__ import annotations

from typing import Any, Callable

import torch


def build_tokenizer(model_cfg: dict[str, Any]) -> Callable[[list[str]], torch.Tensor]:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    text_cfg = model_cfg.get("text_cfg", {})
    ctx = int(text_cfg.get("context_length", 77))
    hf_name = text_cfg.get("hf_tokenizer_name")
    if hf_name:  # e.g. SigLIP / HF text towers: needs the tokenizer files cached locally
        return open_clip.tokenizer.HFTokenizer(hf_name, context_length=ctx,
                                               **text_cfg.get("tokenizer_kwargs", {}))
    return SimpleTokenizer(context_length=ctx, **text_cfg.get("tokenizer_kwargs", {}))


def description_texts(descriptions: dict[str, list[str]], tag: str) -> list[str]:
    """A tag's texts: its descriptions, or its own name (underscores → spaces) when it has none."""
    texts = [t for t in descriptions.get(tag, []) if t and t.strip()]
    return texts or [tag.replace("_", " ")]
