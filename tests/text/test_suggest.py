"""`suggest_descriptions` / `gaudi descriptions suggest`: offline from the wiki's first sentences,
or through the fake OpenAI server; stored as `llm`, never over a user's own descriptions."""
from __future__ import annotations

import pytest

from gaudi_engine.errors import GaudiError
from gaudi_engine.text.suggest import suggest_descriptions
from tests.fakes.openai_server import FakeOpenAI

KEY = "sk-test-suggest-0123456789"
WIKI = {
    "red_hair": "[[Hair]] that is coloured red. It ranges from crimson to orange.\n\nh4. See also\n* [[pink_hair]]",
    "ribbon": "A [b]strip[/b] of cloth tied into a bow, often worn in the hair.",
    "mine": "Something the user already described.",
    "empty_wiki": "h4. See also\n* [[ribbon]]",
}


@pytest.fixture
def cat(catalogue):
    catalogue.execute("BEGIN")
    for name in WIKI:
        catalogue.execute("INSERT INTO tags (name, category, post_count) VALUES (?, 0, 10)", [name])
        catalogue.execute("INSERT INTO wiki_pages (title, body, other_names) VALUES (?, ?, [])", [name, WIKI[name]])
    catalogue.execute("INSERT INTO tags (name, category, post_count) VALUES ('some_artist', 1, 5)")
    catalogue.execute("INSERT INTO wiki_pages (title, body) VALUES ('some_artist', 'An artist.')")
    catalogue.execute("INSERT INTO tag_descriptions VALUES ('mine', 0, 'my own words', 'user', now())")
    catalogue.execute("INSERT INTO tag_descriptions VALUES ('ribbon', 0, 'from the wiki', 'wiki', now())")
    catalogue.execute("COMMIT")
    return catalogue


def rows(cat, tag):
    return cat.fetchall("SELECT text, source FROM tag_descriptions WHERE tag = ? ORDER BY idx", [tag])


def test_offline_suggest_stores_llm_descriptions(cat):
    s = suggest_descriptions(cat, provider="offline")
    assert s["provider"] == "offline"
    assert s["stored"] == {"red_hair": ["Hair that is coloured red. It ranges from crimson to orange."],
                           "ribbon": ["A strip of cloth tied into a bow, often worn in the hair."]}
    assert s["no_wiki"] == ["empty_wiki"] and "some_artist" not in s["stored"]
    assert rows(cat, "red_hair") == [("Hair that is coloured red. It ranges from crimson to orange.", "llm")]
    assert rows(cat, "ribbon") == [("from the wiki", "wiki"),
                                   ("A strip of cloth tied into a bow, often worn in the hair.", "llm")]
    assert rows(cat, "mine") == [("my own words", "user")]
    # deterministic, and a second default run has nothing left to do
    assert suggest_descriptions(cat, provider="offline")["stored"] == {}
    again = suggest_descriptions(cat, tags=["red_hair"], provider="offline")
    assert again["stored"]["red_hair"] == s["stored"]["red_hair"]
    assert rows(cat, "red_hair") == [("Hair that is coloured red. It ranges from crimson to orange.", "llm")]


def test_user_descriptions_are_never_overwritten(cat):
    s = suggest_descriptions(cat, tags=["mine", "red_hair"], provider="offline")
    assert s["skipped_user"] == ["mine"] and list(s["stored"]) == ["red_hair"]
    assert rows(cat, "mine") == [("my own words", "user")]
    s = suggest_descriptions(cat, tags=["mine"], provider="offline", replace_user=True)  # asked for
    assert s["skipped_user"] == [] and rows(cat, "mine") == [("Something the user already described.", "llm")]
    with pytest.raises(GaudiError, match="unknown tag"):
        suggest_descriptions(cat, tags=["no_such_tag"], provider="offline")


def test_openai_suggest_through_fake_server(cat, monkeypatch):
    fake = FakeOpenAI(api_key=KEY).start()
    try:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        s = suggest_descriptions(cat, tags=["red_hair", "mine"], provider="openai", model="gpt-test")
    finally:
        fake.stop()
    assert s["provider"] == "openai" and s["model"] == "gpt-test" and s["usage"]["total_tokens"] > 0
    expected = [f"A picture showing red hair, view {i}." for i in (1, 2, 3)]
    assert s["stored"] == {"red_hair": expected}
    assert rows(cat, "red_hair") == [(t, "llm") for t in expected]
    assert rows(cat, "mine") == [("my own words", "user")]
    assert fake.calls["chat.completions"] == 1  # the user's tag was never sent
    body = fake.requests[0][1]
    assert body["response_format"]["json_schema"]["strict"] is True
    assert "coloured red" in body["messages"][1]["content"]


def test_cli_suggest(cat, capsys):
    from gaudi_engine.cli import main

    rc = main(["--workspace", str(cat.path.parent.parent), "descriptions", "suggest", "--tags", "ribbon"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "using the offline provider" in captured.err
    assert "1 tags got descriptions" in captured.out
    assert rows(cat, "ribbon")[-1] == ("A strip of cloth tied into a bow, often worn in the hair.", "llm")
