"""Property-based tests (hypothesis) of DText -> plain text and of the descriptions JSON loaders
(`train.data.load_tag_descriptions`, `text.descriptions.import_json`): any input gives text or a
one-line GaudiError, never another exception; what a user writes is what is loaded."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaudi_engine.errors import GaudiError
from gaudi_engine.text.dtext import dtext_to_plain, first_sentences
from gaudi_engine.train.data import load_tag_descriptions

FAST = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# DText as wiki pages hold it: markup tokens mixed with words and odd characters.
MARKUP = st.sampled_from(["[[", "]]", "|", "{{", "}}", "[b]", "[/b]", "[i]", "[/spoiler]", "[url=", "[/url]",
                          "h4.", "h4#x.", "* ", "** ", "\"", "\":", "https://x.org/a_(b)", "<https://y.org|", ">",
                          "!post #12", "[expand=A]", "\n", "\r\n", "\n\n", ". ", "(", ")", "_"])
WORD = st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True)
DTEXT = st.lists(st.one_of(MARKUP, WORD, st.text(max_size=6)), max_size=30).map("".join)


@FAST
@given(DTEXT)
def test_any_dtext_gives_tidy_plain_text(body):
    plain = dtext_to_plain(body)
    assert isinstance(plain, str) and "\r" not in plain
    assert plain == plain.strip() and "\n\n\n" not in plain
    desc = first_sentences(plain)
    assert isinstance(desc, str) and "\n" not in desc


@FAST
@given(st.lists(WORD, min_size=1, max_size=4), WORD)
def test_links_and_markup_leave_the_words_a_reader_sees(words, label):
    title = "_".join(words)
    assert dtext_to_plain(f"[[{title}]]") == " ".join(words)
    assert dtext_to_plain(f"a [[{title}|{label}]] b") == f"a {label} b"
    assert dtext_to_plain(f"[b]{label}[/b] [i]{title}[/i]") == f"{label} {title}"
    assert dtext_to_plain(f"h4. {label}\n{title}.") == f"{label}\n\n{title}."


# {tag: [description, ...]} as users write it (a bare string is one description)
DESCS = st.dictionaries(st.text(min_size=1, max_size=12).filter(lambda t: t.strip()),
                        st.one_of(st.text(max_size=20), st.lists(st.text(max_size=20), max_size=3)), max_size=6)


def _expected(data: dict) -> dict:
    out = {}
    for tag, v in data.items():
        texts = [v] if isinstance(v, str) else v
        out[tag.strip().replace(" ", "_")] = [t.strip() for t in texts if t.strip()]
    return out


@FAST
@given(DESCS, st.sampled_from(["utf-8", "utf-8-sig"]))
def test_descriptions_json_loads_what_was_written(tmp_path, data, encoding):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding=encoding)  # a BOM from Windows editors too
    assert load_tag_descriptions(path) == _expected(data)


@FAST
@given(st.one_of(st.binary(max_size=200), st.from_regex(r"[\[\]{}\",:0-9a-z ]{0,40}", fullmatch=True).map(str.encode)))
def test_descriptions_json_is_loaded_or_refused_in_one_line(tmp_path, data):
    path = tmp_path / "d.json"
    path.write_bytes(data)
    try:
        out = load_tag_descriptions(path)
    except GaudiError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(out, dict) and all(isinstance(v, list) for v in out.values())


def test_deeply_nested_json_is_refused_in_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(GaudiError) as err:
        load_tag_descriptions(path)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    from gaudi_engine.catalogue import open_catalogue

    c = open_catalogue(tmp_path_factory.mktemp("cat") / "catalogue.duckdb")
    yield c
    c.close()


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(DESCS.map(lambda d: json.dumps(d).encode()), st.binary(max_size=120)))
def test_import_json_stores_what_was_written_or_refuses_in_one_line(cat, tmp_path, data):
    from gaudi_engine.text.descriptions import import_json, load_descriptions

    path = tmp_path / "d.json"
    path.write_bytes(data)
    try:
        import_json(cat, path)
    except GaudiError as exc:
        assert "\n" not in str(exc)
        return
    stored = load_descriptions(cat)
    for tag, v in json.loads(data.decode("utf-8-sig")).items():
        texts = list(dict.fromkeys(t.strip() for t in ([v] if isinstance(v, str) else v) if t.strip()))
        if tag.strip():
            assert stored.get(tag.strip(), []) == texts
