"""SentencePiece: `gaudi spm-train` on the catalogue's text, the vocab file format, and encoding
with the real model or the greedy fallback."""
from __future__ import annotations

import pytest

from gaudi_engine.errors import GaudiError
from gaudi_engine.text.spm import greedy_encode, load_vocab

COLOURS = ["red", "blue", "green", "black", "white", "pink", "purple", "yellow"]
THINGS = ["hair", "eyes", "ribbon", "skirt", "dress", "gloves", "hat", "jacket"]


def fill_catalogue(cat) -> None:
    pages = []
    for c in COLOURS:
        for t in THINGS:
            name = f"{c}_{t}"
            pages.append((name, f"[[{name}|{c.title()} {t}]] on a character.\n\nh4. See also\n* [[{t}]]",
                          None, [], False))
    cat.execute("BEGIN")
    for p in pages:
        cat.execute("INSERT INTO wiki_pages (title, body, plain, other_names, is_deleted) VALUES (?, ?, ?, ?, ?)", p)
    cat.execute("INSERT INTO wiki_pages (title, body, plain, is_deleted) VALUES "
                "('gone', 'Zanzibar quokka xylophone.', NULL, TRUE)")
    cat.execute("INSERT INTO tag_descriptions VALUES ('red_hair', 0, 'Hair coloured a vivid red.', 'user', now())")
    cat.execute("COMMIT")


def test_spm_train_output_loads_in_sentencepiece(workspace, catalogue, run_gaudi):
    import sentencepiece

    fill_catalogue(catalogue)
    catalogue.close()  # the command opens the catalogue read-only in its own process
    out = workspace.root / "spm"
    rc, stdout, stderr = run_gaudi("--workspace", workspace.root, "spm-train", "--out", "spm",
                                   "--vocab-size", "150", cwd=workspace.root)
    assert rc == 0, stderr
    assert "spm-train:" in stdout and "spm/spm.model" in stdout
    sp = sentencepiece.SentencePieceProcessor(model_file=str(out / "spm.model"))
    lines = (out / "spm.vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == sp.get_piece_size() > 40
    for i, line in enumerate(lines):
        piece, score = line.split("\t")
        assert sp.piece_to_id(piece) == i and float(score) == pytest.approx(sp.get_score(i), abs=1e-4)
    assert "".join(sp.encode("blue ribbon", out_type=str)).replace("\u2581", " ").strip() == "blue ribbon"
    assert not any("quokka" in p for p in (ln.split("\t")[0] for ln in lines))  # deleted wiki skipped

    vocab = load_vocab(out / "spm.vocab.txt")
    assert vocab.processor is not None  # the model beside the vocab encodes exactly
    assert vocab.encode("Blue Ribbon") == sp.encode("blue ribbon", out_type=str)


def test_spm_train_empty_corpus_is_one_line(workspace, catalogue, run_gaudi):
    catalogue.close()
    rc, stdout, stderr = run_gaudi("--workspace", workspace.root, "spm-train", "--out", workspace.root / "spm")
    assert rc == 2 and "nothing to train on" in stderr and len(stderr.strip().splitlines()) == 1


def test_spm_train_without_catalogue(tmp_path, run_gaudi):
    rc, stdout, stderr = run_gaudi("--workspace", tmp_path, "spm-train", "--out", tmp_path / "spm")
    assert rc == 2 and "no catalogue" in stderr


def test_greedy_encode_longest_match():
    ids = {p: i for i, p in enumerate(["\u2581", "\u2581thigh", "\u2581th", "high", "s", "h", "i", "g"])}
    assert greedy_encode("thighhighs", ids, 6) == ["\u2581thigh", "high", "s"]
    assert greedy_encode("x high", ids, 6) == ["\u2581", "\u2581", "high"]  # x unknown: skipped


def test_load_vocab_errors(tmp_path):
    with pytest.raises(GaudiError, match="not found"):
        load_vocab(tmp_path / "nope.txt")
    bad = tmp_path / "bad.vocab.txt"
    bad.write_text("a\t1\nb\tnot-a-number\n")
    with pytest.raises(GaudiError, match="bad.vocab.txt:2"):
        load_vocab(bad)
    # a vocab and a model that do not belong together
    import io

    import sentencepiece

    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(["a b c d e f g"] * 20), model_writer=buf,
                                             vocab_size=12, hard_vocab_limit=False, minloglevel=2)
    (tmp_path / "spm.model").write_bytes(buf.getvalue())
    (tmp_path / "spm.vocab.txt").write_text("<unk>\t0\n")
    with pytest.raises(GaudiError, match="not a pair"):
        load_vocab(tmp_path / "spm.vocab.txt")
