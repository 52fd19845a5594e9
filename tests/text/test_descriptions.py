"""The descriptions store: user text is never overwritten by wiki/llm fills; JSON round trips."""
from __future__ import annotations

import json

import pytest

from gaudi_engine.catalogue.store import upsert_posts, upsert_tags, upsert_wiki
from gaudi_engine.errors import GaudiError
from gaudi_engine.text.descriptions import (add_descriptions, add_many, export_json, fill_from_wiki,
                                            general_tags_table, import_json, load_descriptions,
                                            set_descriptions)


def _post(i, tags):
    return {"id": i, "md5": f"{i:032x}", "file_ext": "png", "raw": "{}", "general_tags": tags}


@pytest.fixture
def filled(catalogue):
    upsert_posts(catalogue, [_post(1, ["hat", "smile", "1girl"]), _post(2, ["hat", "dress"]),
                             _post(3, ["hat"])])
    upsert_wiki(catalogue, [
        {"title": "hat", "body": "...", "plain": "Headwear worn on the head. Many kinds. More."},
        {"title": "smile", "body": "...", "plain": "Overview\n\nA happy face. Corners up. Third."},
        {"title": "dress", "body": "", "plain": ""},                       # a tag without a page
        {"title": "hatsune_miku", "body": "...", "plain": "A character."},  # not a general tag here
    ])
    return catalogue


def test_from_wiki_fills_but_never_overwrites_user_text(filled):
    set_descriptions(filled, "smile", ["my own words"], source="user")
    stats = fill_from_wiki(filled)
    assert stats["skipped_user"] == 1 and stats["tags"] == 1
    d = load_descriptions(filled)
    assert d == {"hat": ["Headwear worn on the head. Many kinds."], "smile": ["my own words"]}
    # run again: nothing duplicated; a refreshed wiki replaces the old wiki text only
    upsert_wiki(filled, [{"title": "hat", "body": "...", "plain": "Headwear. New text."}])
    add_descriptions(filled, "hat", ["a brimmed hat"], source="llm")
    fill_from_wiki(filled)
    assert load_descriptions(filled)["hat"] == ["a brimmed hat", "Headwear. New text."]
    assert load_descriptions(filled)["smile"] == ["my own words"]


def test_replace_user_is_asked_for_explicitly(filled):
    set_descriptions(filled, "smile", ["my own words"], source="user")
    add_descriptions(filled, "smile", ["an llm smile"], source="llm", replace_user=True)
    assert filled.fetchall("SELECT text, source FROM tag_descriptions WHERE tag='smile' ORDER BY idx") == [
        ("an llm smile", "llm")]
    set_descriptions(filled, "smile", ["mine again"], source="user")
    stats = fill_from_wiki(filled, replace_user=True)
    assert stats["replaced_user"] == 1 and stats["skipped_user"] == 0 and stats["tags"] == 2
    assert load_descriptions(filled) == {"hat": ["Headwear worn on the head. Many kinds."],
                                         "smile": ["A happy face. Corners up."]}


def test_llm_and_wiki_fills_skip_user_tags(filled):
    set_descriptions(filled, "hat", ["user hat"])
    assert add_descriptions(filled, "hat", ["llm hat"], source="llm") == 0
    s = add_many(filled, {"hat": ["x"], "dress": ["a one-piece garment", "a one-piece garment", " "]}, "llm")
    assert s == {"tags": 1, "added": 1, "skipped_user": 1}
    assert load_descriptions(filled) == {"hat": ["user hat"], "dress": ["a one-piece garment"]}
    with pytest.raises(GaudiError):
        add_many(filled, {"hat": ["x"]}, "user")
    # a user edit replaces the whole list, whatever wrote it before
    set_descriptions(filled, "dress", ["mine", "also mine"])
    assert filled.fetchall("SELECT text, source FROM tag_descriptions WHERE tag='dress' ORDER BY idx") == [
        ("mine", "user"), ("also mine", "user")]
    set_descriptions(filled, "dress", [])
    assert "dress" not in load_descriptions(filled)


def test_import_export_round_trip(filled, tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps({"hat": ["a hat", "headwear"], "smile": "a smile", "new_tag": []}))
    add_descriptions(filled, "dress", ["wiki dress"], source="wiki")
    assert import_json(filled, src) == {"tags": 3, "descriptions": 3}
    out = tmp_path / "out" / "descs.json"
    assert export_json(filled, out) == 3
    assert json.loads(out.read_text()) == {"dress": ["wiki dress"], "hat": ["a hat", "headwear"],
                                           "smile": ["a smile"]}
    # imported text is the user's: a wiki fill leaves it alone
    fill_from_wiki(filled)
    assert load_descriptions(filled)["hat"] == ["a hat", "headwear"]


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    ('["a", "b"]', "expected a JSON object"),
    ('{"hat": [1, 2]}', "must be a list of strings"),
])
def test_import_rejects_bad_files(catalogue, tmp_path, content, needle):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(GaudiError, match=needle):
        import_json(catalogue, bad)


def test_general_tags_table(filled):
    upsert_tags(filled, [{"name": "hat", "category": 0, "post_count": 5000}])
    set_descriptions(filled, "smile", ["s1", "s2"])
    add_descriptions(filled, "hat", ["h"], source="wiki")
    rows = general_tags_table(filled)
    assert [r["tag"] for r in rows] == ["hat", "1girl", "dress", "smile"]
    hat = rows[0]
    assert (hat["post_count"], hat["n_posts"], hat["n_descriptions"], hat["source"]) == (5000, 3, 1, "wiki")
    smile = general_tags_table(filled, search="smi")
    assert len(smile) == 1 and smile[0]["descriptions"] == ["s1", "s2"] and smile[0]["source"] == "user"
    assert general_tags_table(filled, search="%") == []  # LIKE wildcards are literal
    assert [r["tag"] for r in general_tags_table(filled, order="n_descriptions", limit=2)] == ["smile", "hat"]


def test_descriptions_cli(workspace, run_gaudi, tmp_path):
    src = tmp_path / "d.json"
    src.write_text(json.dumps({"hat": ["a hat"], "smile": ["a smile", "grin"]}))
    rc, out, err = run_gaudi("-w", workspace.root, "descriptions", "import", src)
    assert rc == 0 and "3 descriptions for 2 tags" in out, err
    rc, out, err = run_gaudi("-w", workspace.root, "descriptions", "set", "hat", "brimmed hat", "cap")
    assert rc == 0, err
    rc, out, err = run_gaudi("-w", workspace.root, "descriptions", "from-wiki")
    assert rc == 0 and "sync-wiki" in out  # no pages yet: says what to do
    rc, out, err = run_gaudi("-w", workspace.root, "descriptions", "export", "--out", "data/descs.json")
    assert rc == 0 and "data/descs.json" in out, err
    exported = json.loads((workspace.root / "data" / "descs.json").read_text())
    assert exported == {"hat": ["brimmed hat", "cap"], "smile": ["a smile", "grin"]}
    rc, out, err = run_gaudi("-w", workspace.root, "descriptions", "list", "--json")
    assert rc == 0 and {r["tag"] for r in json.loads(out)} == {"hat", "smile"}
    rc, out, err = run_gaudi("-w", workspace.root, "descriptions", "--help")
    assert rc == 0 and "from-wiki" in out and "export" in out
