"""Text embeddings per tag, shared by pseudo-labelling, Stage B training and inference."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


class TagTexts:
    """Text embeddings per tag: the checkpoint's stored ones for its vocabulary, otherwise from
    the model's text tower (a tag with no description uses its own name, with a warning)."""

    def __init__(self, model, vocab: list[str], text_emb: torch.Tensor | None, descriptions: dict):
        self.model = model
        self.descriptions = dict(descriptions or {})
        self.cache: dict[str, torch.Tensor] = {}
        if text_emb is not None:
            for t, e in zip(vocab, text_emb):
                self.cache[t] = F.normalize(e.float(), dim=-1)
        self.warned: set[str] = set()

    @torch.no_grad()
    def get(self, tags: list[str]) -> torch.Tensor:
        missing = [t for t in tags if t not in self.cache]
        if missing:
            descs = {}
            for t in missing:
                d = self.descriptions.get(t)
                if not d:
                    if t not in self.warned:
                        log.warning("tag %r has no description; using its name as text", t)
                        self.warned.add(t)
                    d = [t.replace("_", " ")]
                descs[t] = d
            emb = self.model.tag_embeddings(descs, missing)
            for t, e in zip(missing, emb):
                self.cache[t] = F.normalize(e.detach().float().cpu(), dim=-1)
        dev = next(self.model.parameters()).device
        return torch.stack([self.cache[t] for t in tags]).to(dev)
