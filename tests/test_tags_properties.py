"""Property-based tests (hypothesis) of the tag-file reader: any bytes decode, any text parses into
tags in Danbooru form, and what it produces parses back to itself."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaudi_engine.tags import (FALLBACK_ENCODINGS, SidecarReader, decode_tag_text, normalise_tag, parse_sidecar,
                               split_tags)

FAST = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text as tag files hold it: tag-like words, separators, spaces, rating entries, odd characters.
PIECES = st.one_of(st.text(max_size=12), st.sampled_from([",", "\n", " ", "\t", "\r\n", ", ", "rating:e",
                                                          "rating:Questionable", "rating:zz", "Long Hair",
                                                          "star_(sky)", "\x00", "\ufeff", "İ", "ß"]))
TAG_TEXT = st.lists(PIECES, max_size=20).map("".join)


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_decode(data):
    text, encoding = decode_tag_text(data)
    assert isinstance(text, str) and encoding in ("utf-8", "utf-16", *FALLBACK_ENCODINGS)


@FAST
@given(st.text(max_size=60).filter(lambda t: not t.startswith("\ufeff")))
def test_utf8_text_reads_back_as_itself(text):
    assert decode_tag_text(text.encode("utf-8")) == (text, "utf-8")
    assert decode_tag_text(b"\xef\xbb\xbf" + text.encode("utf-8")) == (text, "utf-8")  # a BOM is dropped


CP1252 = st.text(alphabet=st.characters(codec="cp1252"), max_size=40)


@FAST
@given(CP1252)
def test_cp1252_text_that_is_not_utf8_reads_back_as_itself(text):
    data = text.encode("cp1252")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        assert decode_tag_text(data) == (text, "cp1252")


@FAST
@given(TAG_TEXT)
def test_parsed_tags_are_in_danbooru_form(text):
    tags, rating = parse_sidecar(text)
    assert rating in (None, "g", "s", "q", "e")
    assert len(tags) == len(set(tags))
    for t in tags:
        assert t and t == normalise_tag(t)
        assert not any(c.isspace() for c in t) and "," not in t
        assert not t.startswith("rating:")


@FAST
@given(TAG_TEXT)
def test_parsed_tags_parse_back_to_themselves(text):
    tags, _ = parse_sidecar(text)
    assert parse_sidecar(", ".join(tags)) == (tags, None)
    assert parse_sidecar("\n".join(tags))[0] == tags
    assert split_tags(tags) == tags


@FAST
@given(data=st.binary(max_size=200))
def test_reading_any_file_never_raises(tmp_path, data):
    path = tmp_path / "x.txt"
    path.write_bytes(data)
    reader = SidecarReader()
    tags, _ = reader.read(path)
    assert all(t == normalise_tag(t) for t in tags)
    note = reader.note()
    assert note is None or ("\n" not in note and "x.txt" in note)


def test_the_reader_says_so_once_per_run(tmp_path):
    reader = SidecarReader()
    for i in range(5):
        (tmp_path / f"{i}.txt").write_bytes("café, naïve".encode("cp1252"))
        assert reader.read(tmp_path / f"{i}.txt")[0] == ["café", "naïve"]
    reader.read(tmp_path / "missing.txt")
    note = reader.note()
    assert "5 tag file(s) not UTF-8, read as cp1252" in note and "and 2 more" in note
    assert "1 tag file(s) unreadable" in note and "\n" not in note
