"""Tag -> tokens: selection, shortlist, offline heuristic, the OpenAI providers through the real SDK
against tests/fakes/openai_server.py, faults (429, 500, bad answers), resume after SIGKILL, and the
vector store reused across runs."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gaudi_engine.errors import GaudiError
from gaudi_engine.text.jsonl_store import JobStore
from gaudi_engine.text.llm import OfflineProvider, OpenAIChatProvider, OpenAIFileSearchProvider
from gaudi_engine.text.shortlist import ShortlistBuilder
from gaudi_engine.text.spm import load_vocab
from gaudi_engine.text.tag_tokens import run_tag_tokens, select_tags
from gaudi_engine.text.vector_store import ensure_vector_store
from tests.conftest import run_gaudi_cmd
from tests.killing import count_lines, sigkill_when
from tests.fakes.openai_server import OUTSIDE_PIECE, FakeOpenAI

KEY = "sk-test-abcdefghijklmnop"
WORDS = ["long", "hair", "blue", "eyes", "short", "smile", "red", "ribbon", "skirt", "thigh",
         "highs", "school", "uniform", "twin", "tails", "open", "mouth", "hat", "sky", "cloud",
         "flower", "book", "sword", "cat", "water", "night", "star", "gloves", "jacket", "shirt"]
GENERAL = ["long_hair", "blue_eyes", "short_hair", "smile", "red_ribbon", "skirt", "thighhighs",
           "school_uniform", "twintails", "open_mouth", "hat", "sky", "cloud", "flower"]


def write_vocab(folder: Path) -> Path:
    """A hand-made vocab (no spm.model beside it: the greedy encoder is used)."""
    pieces = ["<unk>", "<s>", "</s>", "\u2581"] + [f"\u2581{w}" for w in WORDS] + ["s", "ed", "ing"]
    pieces += list("abcdefghijklmnopqrstuvwxyz")
    path = folder / "spm.vocab.txt"
    path.write_text("".join(f"{p}\t{-i / 10:g}\n" for i, p in enumerate(pieces)), encoding="utf-8")
    return path


def tag_objects() -> list[dict]:
    """/tags.json?only=id,name,category,post_count,is_deprecated,wiki_page shaped objects."""
    tags = []
    for i, name in enumerate(GENERAL):
        words = name.replace("_", " ")
        tags.append({"id": i + 1, "name": name, "category": 0, "post_count": 1000 - i * 10,
                     "is_deprecated": False,
                     "wiki_page": {"title": name, "other_names": [words.replace(" ", "")],
                                   "is_deleted": False,
                                   "body": f"A character with [[{name}|{words}]].\n\nh4. See also\n* [[hat]]"}})
    tags += [
        {"id": 90, "name": "hatsune_miku", "category": 4, "post_count": 99999, "is_deprecated": False,
         "wiki_page": {"title": "hatsune_miku", "body": "A vocaloid.", "other_names": [], "is_deleted": False}},
        {"id": 91, "name": "no_wiki_tag", "category": 0, "post_count": 5000, "is_deprecated": False,
         "wiki_page": None},
        {"id": 92, "name": "deleted_wiki", "category": 0, "post_count": 4000, "is_deprecated": False,
         "wiki_page": {"title": "deleted_wiki", "body": "Gone.", "other_names": [], "is_deleted": True}},
    ]
    return tags


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


@pytest.fixture
def fake():
    server = FakeOpenAI(api_key=KEY).start()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    import openai

    return openai.OpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0, timeout=20)


def test_select_tags_keeps_general_with_live_wiki_by_post_count():
    picked = select_tags(tag_objects(), limit=5)
    assert [t["name"] for t in picked] == GENERAL[:5]
    names = {t["name"] for t in select_tags(tag_objects())}
    assert names == set(GENERAL)  # no character tag, no tag without/with a deleted wiki


def test_shortlist_and_offline_tokens_are_deterministic(tmp_path):
    vocab = load_vocab(write_vocab(tmp_path))
    assert vocab.processor is None
    sl = ShortlistBuilder(vocab).build("long_hair", ["longhair"], "Hair that is long.")
    assert sl.tag_pieces == ["\u2581long", "\u2581hair"]
    assert sl.candidates[:2] == ["\u2581long", "\u2581hair"]
    assert all(p in vocab.ids for p in sl.candidates) and "<unk>" not in sl.candidates
    # near matches find pieces the greedy encoding (▁thigh h i g h s) misses
    assert {"\u2581thigh", "\u2581highs"} <= set(ShortlistBuilder(vocab).near_matches("thighhighs"))

    a = run_tag_tokens(tag_objects(), vocab, tmp_path / "a", OfflineProvider(), concurrency=3)
    b = run_tag_tokens(tag_objects(), vocab, tmp_path / "b", OfflineProvider(), concurrency=1)
    assert a["done"] == b["done"] == len(GENERAL) and a["failed"] == 0
    ra = {r["tag"]: r for r in read_jsonl(tmp_path / "a" / "results.jsonl")}
    rb = {r["tag"]: r for r in read_jsonl(tmp_path / "b" / "results.jsonl")}
    assert {t: r["tokens"] for t, r in ra.items()} == {t: r["tokens"] for t, r in rb.items()}
    assert ra["long_hair"]["tokens"] == ["\u2581long", "\u2581hair"]
    assert ra["thighhighs"]["tokens"] == ["\u2581thigh", "\u2581highs"]
    assert ra["twintails"]["tokens"] == ["\u2581twin", "\u2581tails"]
    lines = (tmp_path / "spm.vocab.txt").read_text(encoding="utf-8").splitlines()
    for r in ra.values():
        assert [lines[i].split("\t")[0] for i in r["token_ids"]] == r["tokens"]
        assert r["provider"] == "offline" and set(r["tokens"]) <= set(r["candidates"])


def test_openai_results_for_every_tag(tmp_path, fake, client):
    vocab = load_vocab(write_vocab(tmp_path))
    provider = OpenAIChatProvider(client, "gpt-test")
    s = run_tag_tokens(tag_objects(), vocab, tmp_path / "out", provider, limit=10, concurrency=3)
    results = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert sorted(r["tag"] for r in results) == sorted(GENERAL[:10])
    assert s["done"] == 10 and s["failed"] == 0 and s["tokens_used"] > 0
    assert s["tokens_used"] == sum(r["usage"]["total_tokens"] for r in results)
    for r in results:
        assert r["tokens"] == r["candidates"][:min(3, len(r["candidates"]))]  # the fake's choice
        assert r["token_ids"] == [vocab.id_of(p) for p in r["tokens"]]
    name, body = fake.requests[0]
    js = body["response_format"]["json_schema"]
    assert body["response_format"]["type"] == "json_schema" and js["strict"] is True
    enum = js["schema"]["properties"]["tokens"]["items"]["enum"]
    prompt_tag = body["messages"][1]["content"].split("\n")[0].removeprefix("Tag: ")
    assert enum == next(r["candidates"] for r in results if r["tag"] == prompt_tag)
    assert (tmp_path / "out" / "done.txt").read_text().split() == [r["tag"] for r in results]
    assert KEY not in "".join(p.read_text() for p in (tmp_path / "out").iterdir() if p.is_file())


def test_429_with_retry_after_then_success(tmp_path, fake, client):
    vocab = load_vocab(write_vocab(tmp_path))
    fake.rate_limit(2, retry_after="0.3")
    provider = OpenAIChatProvider(client, "gpt-test", backoff_base=0.001)
    t0 = time.monotonic()
    s = run_tag_tokens(tag_objects(), vocab, tmp_path / "out", provider, limit=3, concurrency=1)
    elapsed = time.monotonic() - t0
    assert s["done"] == 3 and s["failed"] == 0
    assert fake.calls["chat.completions"] == 5
    assert elapsed >= 0.55  # two waits of Retry-After: 0.3 s, not the 1 ms backoff


def test_5xx_retried_and_gives_up_to_errors(tmp_path, fake, client):
    vocab = load_vocab(write_vocab(tmp_path))
    fake.server_error(1, status=503)
    provider = OpenAIChatProvider(client, "gpt-test", backoff_base=0.001)
    assert run_tag_tokens(tag_objects(), vocab, tmp_path / "a", provider, limit=2)["done"] == 2
    fake.server_error(3, status=500)
    provider = OpenAIChatProvider(client, "gpt-test", backoff_base=0.001, max_tries=3)
    s = run_tag_tokens(tag_objects(), vocab, tmp_path / "b", provider, limit=1)
    errors = read_jsonl(tmp_path / "b" / "errors.jsonl")
    assert s["failed"] == 1 and "gave up after 3 tries" in errors[0]["message"]


def test_out_of_shortlist_and_invalid_json(tmp_path, fake, client):
    vocab = load_vocab(write_vocab(tmp_path))
    fake.misbehave("long_hair", "outside")            # always: retried once, then an error
    fake.misbehave("blue_eyes", "invalid_json", times=1)  # once: the retry succeeds
    fake.misbehave("short_hair", "invalid_json")
    provider = OpenAIChatProvider(client, "gpt-test")
    s = run_tag_tokens(tag_objects(), vocab, tmp_path / "out", provider, limit=4, concurrency=2)
    results = {r["tag"]: r for r in read_jsonl(tmp_path / "out" / "results.jsonl")}
    errors = {e["tag"]: e for e in read_jsonl(tmp_path / "out" / "errors.jsonl")}
    assert set(results) == {"blue_eyes", "smile"} and set(errors) == {"long_hair", "short_hair"}
    assert results["blue_eyes"]["attempts"] == 2
    assert OUTSIDE_PIECE.strip("\u2581") in errors["long_hair"]["message"]
    assert "not valid JSON" in errors["short_hair"]["message"]
    assert s["failed"] == 2 and s["done"] == 2
    assert fake.calls["chat.completions"] == 2 + 2 + 2 + 1
    # a rerun skips everything; --retry-failed asks again for the failed ones only
    again = run_tag_tokens(tag_objects(), vocab, tmp_path / "out", provider, limit=4)
    assert (again["done"], again["failed"], again["skipped"]) == (0, 0, 4)
    fake.misbehave("long_hair", "outside", times=0)
    retry = run_tag_tokens(tag_objects(), vocab, tmp_path / "out", provider, limit=4, retry_failed=True)
    assert (retry["done"], retry["failed"], retry["skipped"]) == (1, 1, 2)
    results = [r["tag"] for r in read_jsonl(tmp_path / "out" / "results.jsonl")]
    errors = [e["tag"] for e in read_jsonl(tmp_path / "out" / "errors.jsonl")]
    assert sorted(results) == ["blue_eyes", "long_hair", "smile"] and errors == ["short_hair"]


def test_store_reconciles_and_cuts_torn_lines(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text('{"tag":"a","tokens":["x"]}\n{"tag":"b","tokens":["y"]}\n{"tag":"c","tok')
    (out / "done.txt").write_text("a\n")
    (out / "errors.jsonl").write_text('{"tag":"d","message":"bad"}\n')
    with JobStore(out) as store:
        assert store.done == {"a", "b", "d"} and store.reconciled == 2
        with pytest.raises(GaudiError, match="in use by another run"):
            JobStore(out)
        store.add_result({"tag": "c", "tokens": ["z"]})
        store.add_result({"tag": "c", "tokens": ["again"]})  # a tag is finished only once
    assert [r["tag"] for r in read_jsonl(out / "results.jsonl")] == ["a", "b", "c"]
    assert (out / "done.txt").read_text().split() == ["a", "b", "d", "c"]


def test_resume_after_sigkill(tmp_path):
    vocab = write_vocab(tmp_path)
    tags = tmp_path / "tags.json"
    tags.write_text(json.dumps(tag_objects()))
    out = tmp_path / "out"
    fake = FakeOpenAI(api_key=KEY, delay=0.15).start()
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.base_url}
    args = ["tag-tokens", "--tags-json", tags, "--spm-vocab", vocab, "--out-dir", out,
            "--model", "gpt-test", "--concurrency", "2", "--provider", "openai"]
    try:
        sigkill_when(args, lambda: count_lines(out / "done.txt") >= 4, log=tmp_path / "killed.log",
                     timeout=30, env=env)
        first = read_jsonl(out / "results.jsonl")
        assert 4 <= len(first) < len(GENERAL), "the kill came too late to test resuming"
        rc, stdout, stderr = run_gaudi_cmd(*args, env=env, timeout=60)
        assert rc == 0, stderr
    finally:
        fake.stop()
    results = [r["tag"] for r in read_jsonl(out / "results.jsonl")]
    done = (out / "done.txt").read_text().split()
    assert sorted(results) == sorted(GENERAL) and len(results) == len(set(results))
    assert sorted(done) == sorted(GENERAL) and len(done) == len(set(done))
    assert read_jsonl(out / "errors.jsonl") == []
    assert "skipped (already done)" in stdout and KEY not in stdout + stderr


def test_file_search_reuses_vector_store(tmp_path, fake, client):
    vocab_path = write_vocab(tmp_path)
    vocab = load_vocab(vocab_path)
    fake.max_page = 2  # the store must be found across pages
    for i in range(5):
        fake.add_store(f"someone-else-{i}")
    first = ensure_vector_store(client, vocab_path)
    assert not first["reused"]
    assert fake.calls["files.create"] == 1 and fake.calls["vector_stores.files.create"] == 1
    assert fake.calls["vector_stores.files.retrieve"] >= 2  # polled until completed
    for i in range(3):  # newer stores push ours to a later page
        fake.add_store(f"later-{i}")
    provider = OpenAIFileSearchProvider(client, first["id"], model="gpt-test")
    s = run_tag_tokens(tag_objects(), vocab, tmp_path / "a", provider, limit=3)
    assert s["done"] == 3 and fake.calls["responses.create"] == 3
    tools = fake.requests[-1][1]["tools"]
    assert tools == [{"type": "file_search", "vector_store_ids": [first["id"]]}]

    second = ensure_vector_store(client, vocab_path)
    assert second["reused"] and second["id"] == first["id"]
    assert fake.calls["files.create"] == 1 and fake.calls["vector_stores.create"] == 1
    assert fake.calls["vector_stores.list"] >= 2  # paginated

    # through the CLI, from scratch: it reuses the same store and uploads nothing
    tags = tmp_path / "tags.json"
    tags.write_text(json.dumps(tag_objects()))
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.base_url}
    rc, out, err = run_gaudi_cmd("tag-tokens-fs", "--tags-json", tags, "--spm-vocab", vocab_path,
                                 "--out-dir", tmp_path / "b", "--limit", "2", env=env, timeout=60)
    assert rc == 0, err
    assert "reusing" in err and "2 done, 0 failed" in out
    assert fake.calls["files.create"] == 1 and fake.calls["vector_stores.create"] == 1


def test_cli_errors_are_one_line(tmp_path, fake):
    vocab = write_vocab(tmp_path)
    tags = tmp_path / "tags.json"
    tags.write_text(json.dumps(tag_objects()))
    common = ["--tags-json", tags, "--spm-vocab", vocab, "--out-dir", tmp_path / "o", "--limit", "2"]
    rc, out, err = run_gaudi_cmd("tag-tokens-fs", *common)
    assert rc == 2 and "OPENAI_API_KEY is not set" in err and len(err.strip().splitlines()) == 1
    bad_key = "sk-wrong-key-0123456789"
    rc, out, err = run_gaudi_cmd("tag-tokens", *common, "--provider", "openai",
                                 env={"OPENAI_API_KEY": bad_key, "OPENAI_BASE_URL": fake.base_url})
    assert rc == 2 and "rejected the API key" in err and bad_key not in err
    assert len(err.strip().splitlines()) == 1
    rc, out, err = run_gaudi_cmd("tag-tokens", "--tags-json", tmp_path / "nope.json", "--spm-vocab",
                                 vocab, "--out-dir", tmp_path / "o")
    assert rc == 2 and "tags file not found" in err
    # no key: the offline provider, said in one line
    rc, out, err = run_gaudi_cmd("tag-tokens", *common)
    assert rc == 0 and "using the offline provider" in err and "2 done" in out


def test_from_catalogue_offline_with_progress_jsonl(tmp_path, workspace, catalogue, run_gaudi):
    catalogue.execute("BEGIN")
    for t in tag_objects():
        catalogue.execute("INSERT INTO tags (name, category, post_count, is_deprecated) VALUES (?, ?, ?, ?)",
                          [t["name"], t["category"], t["post_count"], t["is_deprecated"]])
        w = t["wiki_page"]
        if w:
            catalogue.execute("INSERT INTO wiki_pages (title, body, other_names, is_deleted) VALUES (?, ?, ?, ?)",
                              [w["title"], w["body"], w["other_names"], w["is_deleted"]])
    catalogue.execute("COMMIT")
    from gaudi_engine.text.tag_tokens import tags_from_catalogue

    exported = {t["name"]: t for t in tags_from_catalogue(catalogue)}
    assert exported["long_hair"]["wiki_page"]["other_names"] == ["longhair"]
    assert exported["no_wiki_tag"]["wiki_page"] is None
    catalogue.close()
    vocab = write_vocab(tmp_path)
    progress = tmp_path / "progress.jsonl"
    rc, out, err = run_gaudi("--workspace", workspace.root, "tag-tokens", "--from-catalogue",
                             "--spm-vocab", vocab, "--out-dir", tmp_path / "out", "--limit", "5",
                             "--progress-jsonl", progress)
    assert rc == 0, err
    results = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert [r["tag"] for r in sorted(results, key=lambda r: -r["post_count"])] == GENERAL[:5]
    events = read_jsonl(progress)
    assert events[-1]["event"] == "end" and events[-1]["done"] == 5 and events[-1]["status"] == "ok"
