"""SentencePiece vocabularies: read `spm.vocab.txt` (`piece<TAB>score`, id = line number), encode
text into pieces (the real `sentencepiece` model when `spm.model` sits beside the vocab, else a
greedy longest-match over the pieces), and train a model on the catalogue's own text.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import GaudiError

WORD_START = "\u2581"  # "▁": SentencePiece's marker for a word boundary
CONTROL_PIECES = {"<unk>", "<s>", "</s>", "<pad>"}


@dataclass
class Vocab:
    """Pieces in id order, with a SentencePiece processor when `spm.model` was found."""

    path: Path
    pieces: list[str]
    scores: list[float]
    ids: dict[str, int] = field(repr=False)
    processor: object | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._longest = max((len(p) for p in self.pieces), default=1)

    def __len__(self) -> int:
        return len(self.pieces)

    def id_of(self, piece: str) -> int:
        return self.ids[piece]

    def encode(self, text: str) -> list[str]:
        """The pieces of `text` in order (control pieces and uncovered characters dropped)."""
        text = " ".join(text.split())
        if not text:
            return []
        return [p for p in self._encode_one(text) if p in self.ids and p not in CONTROL_PIECES]

    def candidate_pieces(self, text: str) -> list[str]:
        """Distinct pieces of `text` and of its lower-cased form (booru tags are lower case while
        wiki prose is not, and a user's vocab may not fold case), first occurrence first."""
        pieces = self.encode(text)
        if text != text.lower():
            pieces += self.encode(text.lower())
        return list(dict.fromkeys(pieces))

    def _encode_one(self, text: str) -> list[str]:
        if self.processor is not None:
            return list(self.processor.encode(text, out_type=str))
        return greedy_encode(text, self.ids, self._longest)


def greedy_encode(text: str, ids: dict[str, int], longest: int) -> list[str]:
    """Longest-match segmentation of each whitespace word (prefixed with ▁, as SentencePiece does).
    A character no piece covers is skipped; it cannot be a candidate anyway."""
    pieces: list[str] = []
    for word in text.split():
        s = WORD_START + word
        i = 0
        while i < len(s):
            for j in range(min(len(s), i + longest), i, -1):
                if s[i:j] in ids:
                    pieces.append(s[i:j])
                    i = j
                    break
            else:
                i += 1
    return pieces


def load_vocab(path: str | Path) -> Vocab:
    """Read `spm.vocab.txt` (`piece<TAB>score` per line; id = 0-based line number). A sibling
    `spm.model` (or `<stem>.model`) is loaded with sentencepiece for exact encoding."""
    path = Path(path)
    if not path.is_file():
        raise GaudiError(f"vocab file not found: {path}")
    pieces: list[str] = []
    scores: list[float] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n").rstrip("\r")
            piece, _, score = line.partition("\t")
            if not piece:
                raise GaudiError(f"{path}:{lineno}: empty piece (expected `piece<TAB>score` lines)")
            try:
                scores.append(float(score) if score else 0.0)
            except ValueError:
                raise GaudiError(f"{path}:{lineno}: score {score!r} is not a number") from None
            pieces.append(piece)
    if not pieces:
        raise GaudiError(f"vocab file {path} is empty")
    ids: dict[str, int] = {}
    for i, piece in enumerate(pieces):
        ids.setdefault(piece, i)  # first occurrence wins, as in sentencepiece
    return Vocab(path=path, pieces=pieces, scores=scores, ids=ids, processor=_sibling_model(path, len(pieces)))


def _sibling_model(vocab_path: Path, n_pieces: int):
    stem = vocab_path.name.split(".")[0]
    for cand in (vocab_path.with_name("spm.model"), vocab_path.with_name(f"{stem}.model")):
        if cand.is_file():
            import sentencepiece

            sp = sentencepiece.SentencePieceProcessor()
            try:
                sp.load(str(cand))
            except (OSError, RuntimeError) as exc:
                raise GaudiError(f"cannot load SentencePiece model {cand}: {str(exc).splitlines()[0]}") from None
            if sp.get_piece_size() != n_pieces:
                raise GaudiError(f"{cand} has {sp.get_piece_size()} pieces but {vocab_path} lists "
                                 f"{n_pieces}: they are not a pair")
            return sp
    return None


# -- training ----------------------------------------------------------------------------------

def catalogue_corpus(cat) -> list[str]:
    """Sentences for training: every description plus the plain text of every live wiki page."""
    from .dtext import dtext_to_plain

    lines: list[str] = []
    for (text,) in cat.fetchall("SELECT text FROM tag_descriptions WHERE text IS NOT NULL ORDER BY tag, idx"):
        lines.extend(_split_lines(text))
    rows = cat.fetchall("SELECT title, body, plain FROM wiki_pages "
                        "WHERE NOT coalesce(is_deleted, FALSE) ORDER BY title")
    for title, body, plain in rows:
        text = plain if plain else dtext_to_plain(body or "")
        lines.extend(_split_lines(text))
        lines.append(title.replace("_", " "))
    return lines


def _split_lines(text: str) -> Iterable[str]:
    return [ln.strip() for ln in (text or "").splitlines() if ln.strip()]


def train_spm(sentences: list[str], out_dir: str | Path, vocab_size: int = 8000,
              model_type: str = "unigram") -> dict:
    """Train on `sentences` and write `spm.model` + `spm.vocab.txt` into `out_dir`.

    Small corpora cannot fill a large vocabulary; `hard_vocab_limit=False` lets SentencePiece stop
    at what the text supports instead of failing. Text is case-folded (`nmt_nfkc_cf`) because
    booru tags are lower case."""
    import sentencepiece

    sentences = [s for s in sentences if s.strip()]
    if not sentences:
        raise GaudiError("nothing to train on: the catalogue has no descriptions or wiki text "
                         "(run `gaudi sync-wiki` or `gaudi descriptions import` first)")
    if vocab_size < 8:
        raise GaudiError(f"--vocab-size {vocab_size} is too small (at least 8)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=buf, vocab_size=vocab_size,
            model_type=model_type, hard_vocab_limit=False, normalization_rule_name="nmt_nfkc_cf",
            character_coverage=1.0, num_threads=1, minloglevel=2)
    except RuntimeError as exc:
        raise GaudiError(f"SentencePiece training failed: {str(exc).splitlines()[0]}") from None
    model_bytes = buf.getvalue()
    sp = sentencepiece.SentencePieceProcessor(model_proto=model_bytes)
    (out / "spm.model").write_bytes(model_bytes)
    with open(out / "spm.vocab.txt", "w", encoding="utf-8") as fh:
        for i in range(sp.get_piece_size()):
            fh.write(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n")
    return {"model": str(out / "spm.model"), "vocab": str(out / "spm.vocab.txt"),
            "pieces": sp.get_piece_size(), "requested": vocab_size, "sentences": len(sentences)}
