"""The candidate shortlist for one tag: the only vocab pieces a model may answer with.

Sources, in order (earlier ones first, so a short list keeps the best): the encoding of the tag's
own name, near matches of the tag's words over the whole vocab (string similarity, through a
character-trigram index so a 32k vocab costs milliseconds), the encodings of its other names,
then the pieces of its wiki's first sentences.
"""
from __future__ import annotations

import difflib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

from .spm import CONTROL_PIECES, WORD_START, Vocab

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def tag_words(tag: str) -> str:
    """`long_hair` -> `long hair`; `star_(sky)` -> `star (sky)`."""
    return tag.replace("_", " ").strip()


def norm_piece(piece: str) -> str:
    """A piece as plain lower-case text (no ▁)."""
    return piece.replace(WORD_START, "").lower()


def _useful(piece: str) -> bool:
    """A piece worth offering: not a control symbol, and carrying a letter or digit."""
    return piece not in CONTROL_PIECES and bool(_WORD.search(norm_piece(piece)))


@dataclass
class Shortlist:
    tag: str
    candidates: list[str]  # vocab pieces, best sources first, no duplicates
    tag_pieces: list[str]  # the encoding of the tag's own name


class ShortlistBuilder:
    """Builds shortlists over one vocab; the near-match index is built once and shared."""

    def __init__(self, vocab: Vocab, max_candidates: int = 48, near_per_word: int = 4,
                 min_similarity: float = 0.6):
        self.vocab = vocab
        self.max_candidates = max_candidates
        self.near_per_word = near_per_word
        self.min_similarity = min_similarity
        self._grams: dict[str, list[int]] = defaultdict(list)
        self._norms: list[str] = []
        for i, piece in enumerate(vocab.pieces):
            n = norm_piece(piece) if _useful(piece) else ""
            self._norms.append(n)
            if len(n) >= 2:
                for g in _trigrams(n):
                    self._grams[g].append(i)

    def near_matches(self, word: str) -> list[str]:
        """Vocab pieces spelled like `word` (e.g. `hairs`, `▁hair` for `hair`), most similar
        first; ties go to the piece that starts a word, then to the lower id."""
        word = word.lower()
        if len(word) < 2:
            return []
        hits: Counter[int] = Counter()
        for g in _trigrams(word):
            for i in self._grams.get(g, ()):
                hits[i] += 1
        scored = []
        for i, _ in hits.most_common(200):
            sim = difflib.SequenceMatcher(None, word, self._norms[i]).ratio()
            if sim >= self.min_similarity:
                piece = self.vocab.pieces[i]
                scored.append((-sim, not piece.startswith(WORD_START), i, piece))
        scored.sort()
        return [piece for *_, piece in scored[: self.near_per_word]]

    def build(self, tag: str, other_names: list[str] | None = None, wiki_text: str = "") -> Shortlist:
        name = tag_words(tag)
        tag_pieces = [p for p in self.vocab.candidate_pieces(name) if _useful(p)]
        ordered: list[str] = list(tag_pieces)
        for word in _WORD.findall(name):
            ordered.extend(self.near_matches(word))
        for other in other_names or []:
            ordered.extend(p for p in self.vocab.candidate_pieces(tag_words(other)) if _useful(p))
        if wiki_text:
            ordered.extend(p for p in self.vocab.candidate_pieces(wiki_text) if _useful(p))
        seen: set[str] = set()
        candidates = []
        for piece in ordered:
            if piece not in seen:
                seen.add(piece)
                candidates.append(piece)
        return Shortlist(tag=tag, candidates=candidates[: self.max_candidates],
                         tag_pieces=tag_pieces)


def _trigrams(s: str) -> set[str]:
    padded = f"^{s}$"
    return {padded[i:i + 3] for i in range(len(padded) - 2)}
