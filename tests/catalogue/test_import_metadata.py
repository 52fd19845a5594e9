"""`gaudi import-metadata`: dumps (JSON lines / Parquet, a folder of shards) land in the catalogue
exactly as a sync of the same posts would store them; reruns, bad input, resume and SIGKILL."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gaudi_engine.booru import dump_import
from gaudi_engine.booru.client import DanbooruClient
from gaudi_engine.booru.dump_import import DumpError, import_metadata
from gaudi_engine.booru.sync import sync_posts
from gaudi_engine.catalogue import open_catalogue
from gaudi_engine.workspace import DanbooruSettings, Workspace
from tests.conftest import run_gaudi_cmd
from tests.killing import assert_ended, progress_done, sigkill_when

POST_COLS = ("id, md5, file_ext, file_size, rating, width, height, file_url, large_file_url, "
             "preview_url, is_deleted, is_banned, source, origin, created_at, general_tags")


def served_posts(b) -> list[dict]:
    """The post objects exactly as the booru's /posts.json serves them, newest first."""
    return b.search_posts("", limit=10_000, page="1")


def write_jsonl(path: Path, objs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(orjson.dumps(o) + b"\n" for o in objs)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_parquet(path: Path, objs: list[dict], row_group_size: int = 1000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for o in objs for k in o))
    pq.write_table(pa.table({k: [o.get(k) for o in objs] for k in keys}), path,
                   row_group_size=row_group_size)
    return path


def without_nulls(value):
    """A JSON value with null members dropped, recursively (Parquet structs have every field)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def snapshot(cat) -> dict:
    return {"posts": cat.fetchall(f"SELECT {POST_COLS}, raw::VARCHAR, synced_at FROM posts ORDER BY id"),
            "post_tags": cat.fetchall("SELECT post_id, tag FROM post_tags ORDER BY ALL")}


def synced_catalogue(tmp_path, b):
    ws = Workspace(tmp_path / "synced").ensure()
    cat = open_catalogue(ws.catalogue_path)
    sync_posts(ws, cat, DanbooruClient(DanbooruSettings(base_url=b.url, requests_per_second=0)),
               page_size=100)
    return cat


def fresh_catalogue(tmp_path, name="imported"):
    return open_catalogue(Workspace(tmp_path / name).ensure().catalogue_path)


def assert_same_posts(got, want, compare_raw=True):
    """Every column the sync wrote (synced_at aside), post_tags pair for pair."""
    g, w = snapshot(got), snapshot(want)
    assert [r[:16] for r in g["posts"]] == [r[:16] for r in w["posts"]]
    if compare_raw:
        assert [r[16] for r in g["posts"]] == [r[16] for r in w["posts"]]
    assert g["post_tags"] == w["post_tags"]
    assert got.scalar("SELECT count(*) FROM post_tags") == len(set(g["post_tags"]))


def test_jsonl_folder_imports_as_sync_stores_and_rerun_changes_nothing(booru, tmp_path):
    b = booru(150, seed=3, banned=0.1, deleted=0.1, mp4=0.05)
    objs = served_posts(b)
    dump = tmp_path / "dump"
    write_jsonl(dump / "posts-000.jsonl", objs[:60])
    write_jsonl(dump / "posts-001.jsonl.gz", objs[60:110])
    write_jsonl(dump / "more" / "posts-002.ndjson", objs[110:])
    (dump / "README.txt").write_text("not a shard: ignored")
    want = synced_catalogue(tmp_path, b)
    cat = fresh_catalogue(tmp_path)

    s = import_metadata(cat, dump, origin=b.url, batch_size=40, workers=1)
    assert s["stored"] == 150 and s["shards"] == 3 and s["skipped_shards"] == 0
    assert s["banned"] == sum(1 for o in objs if not o.get("md5")) > 0
    assert s["deleted"] == sum(1 for o in objs if o["is_deleted"]) > 0
    assert_same_posts(cat, want)
    # general tags only: no artist/character/copyright/meta tag is a post tag
    others = {t for o in objs for k in ("tag_string_artist", "tag_string_character",
                                        "tag_string_copyright", "tag_string_meta")
              for t in o[k].split()}
    assert others and not others & {t for _, t in snapshot(cat)["post_tags"]}
    # banned: kept without md5/URLs (the media side reads them as not downloadable)
    assert cat.scalar("SELECT count(*) FROM posts WHERE md5 IS NULL AND file_url IS NOT NULL") == 0

    before = snapshot(cat)
    s2 = import_metadata(cat, dump, origin=b.url, workers=0)
    assert s2["stored"] == 0 and s2["skipped_shards"] == 3
    assert snapshot(cat) == before
    # the same posts again under another name (not skipped): the rows come out the same
    write_jsonl(tmp_path / "again.jsonl", objs)
    s3 = import_metadata(cat, tmp_path / "again.jsonl", origin=b.url, workers=0)
    assert s3["stored"] == 150
    assert_same_posts(cat, want)


def test_parquet_shards_import_as_sync_stores(booru, tmp_path):
    b = booru(90, seed=8, banned=0.1, deleted=0.1)
    objs = served_posts(b)
    dump = tmp_path / "pq"
    write_parquet(dump / "part-0.parquet", objs[:50], row_group_size=16)
    write_parquet(dump / "part-1.parquet", objs[50:], row_group_size=16)
    want = synced_catalogue(tmp_path, b)
    cat = fresh_catalogue(tmp_path)
    s = import_metadata(cat, dump, origin=b.url, batch_size=20, workers=0)
    assert s["stored"] == 90 and s["shards"] == 2
    # raw: the row as a JSON object (absent keys of banned posts come back as nulls)
    assert_same_posts(cat, want, compare_raw=False)
    served = {o["id"]: without_nulls(o) for o in objs}
    for pid, raw in cat.fetchall("SELECT id, raw FROM posts"):
        assert without_nulls(json.loads(raw)) == served[pid]
    assert import_metadata(cat, dump, origin=b.url, workers=0)["skipped_shards"] == 2


def test_real_captures_import(tmp_path):
    """Every real /posts.json capture imports (gaps in its schema included)."""
    fixtures = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "danbooru"
    objs = []
    for f in sorted(fixtures.glob("danbooru_post*.json")):
        data = json.loads(f.read_text())
        objs.extend(data if isinstance(data, list) else [data])
    write_jsonl(tmp_path / "real.jsonl", objs)
    cat = fresh_catalogue(tmp_path)
    assert import_metadata(cat, tmp_path / "real.jsonl", workers=0)["stored"] == len({o["id"] for o in objs})
    want = {(o["id"], t) for o in objs for t in o["tag_string_general"].split()}
    assert set(cat.fetchall("SELECT post_id, tag FROM post_tags")) == want


def test_malformed_line_is_one_clear_error_and_earlier_shards_stay(booru, tmp_path, run_gaudi):
    b = booru(30, seed=4)
    objs = served_posts(b)
    dump = tmp_path / "dump"
    write_jsonl(dump / "a.jsonl", objs[:10])
    bad = write_jsonl(dump / "b.jsonl", objs[10:20])
    lines = bad.read_bytes().split(b"\n")
    lines[2] = lines[2][:40]  # line 3: cut in the middle
    bad.write_bytes(b"\n".join(lines))
    write_jsonl(dump / "c.jsonl", objs[20:])
    ws = tmp_path / "ws"
    rc, out, err = run_gaudi("-w", ws, "import-metadata", dump, "--workers", "0")
    assert rc != 0
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "b.jsonl:3" in err and "not a JSON object" in err
    cat = open_catalogue(Workspace(ws).catalogue_path)
    try:
        stored = {r[0] for r in cat.fetchall("SELECT id FROM posts")}
        assert {o["id"] for o in objs[:10]} <= stored  # shard a stays
        assert not stored & {o["id"] for o in objs[20:]}
    finally:
        cat.close()
    # fixed: the rerun skips a and imports the rest
    write_jsonl(bad, objs[10:20])
    rc, out, err = run_gaudi("-w", ws, "import-metadata", dump, "--workers", "0")
    assert rc == 0, err
    assert "1 shard(s) already imported" in out
    cat = open_catalogue(Workspace(ws).catalogue_path)
    try:
        assert cat.scalar("SELECT count(DISTINCT id) FROM posts") == cat.scalar("SELECT count(*) FROM posts") == 30
    finally:
        cat.close()


@pytest.mark.parametrize("content, expect", [
    (b'{"id": 5, "tag_string": "a b"}\n', "d.jsonl:1: post has no 'tag_string_general' field"),
    (b'{"tag_string_general": "a"}\n', "d.jsonl:1: post has no 'id' field"),
    (b'[1, 2]\n', "d.jsonl:1: not a Danbooru post object"),
    (b'{"id": 1, "tag_string_general": ""}\n\n{"id": "x", "tag_string_general": ""}\n',
     "d.jsonl:3: not a Danbooru post object"),
    (b'{"id": 1, "tag_string_general": ""}\n{"id": 2, "tag_string_general": "a", "rating": 5}\n',
     "d.jsonl:2: post 2: a field has the wrong type"),
])
def test_bad_records_name_the_file_and_line(tmp_path, content, expect):
    (tmp_path / "d.jsonl").write_bytes(content)
    cat = fresh_catalogue(tmp_path)
    with pytest.raises(DumpError) as exc:
        import_metadata(cat, tmp_path / "d.jsonl", workers=0)
    assert expect in str(exc.value) and "\n" not in str(exc.value)


def test_unreadable_inputs(tmp_path):
    cat = fresh_catalogue(tmp_path)
    with pytest.raises(DumpError, match="no such file"):
        import_metadata(cat, tmp_path / "missing", workers=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DumpError, match="no dump files"):
        import_metadata(cat, tmp_path / "empty", workers=0)
    (tmp_path / "junk.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(DumpError, match="junk.parquet: not a readable Parquet file"):
        import_metadata(cat, tmp_path / "junk.parquet", workers=0)
    write_parquet(tmp_path / "nocol.parquet", [{"id": 1, "tag_string": "a"}])
    with pytest.raises(DumpError, match="nocol.parquet: no column 'tag_string_general'"):
        import_metadata(cat, tmp_path / "nocol.parquet", workers=0)
    gz = tmp_path / "cut.jsonl.gz"
    data = b"".join(orjson.dumps(o) + b"\n" for o in synthetic_posts(200))
    gz.write_bytes(gzip.compress(data)[:len(data) // 20])
    with pytest.raises(DumpError, match="cut.jsonl.gz: cannot read"):
        import_metadata(cat, gz, workers=0)


def synthetic_posts(n: int, first_id: int = 1, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    vocab = [f"tag_{i}" for i in range(300)]
    return [{"id": first_id + i, "md5": f"{first_id + i:032x}", "file_ext": "jpg", "rating": "g",
             "image_width": 100, "image_height": 150, "is_deleted": False, "is_banned": False,
             "tag_string_general": " ".join(rng.sample(vocab, 20)), "tag_string_artist": "someone",
             "file_url": f"https://cdn.example/{first_id + i}.jpg"} for i in range(n)]


def assert_exact(cat, objs):
    assert cat.scalar("SELECT count(*) FROM posts") == cat.scalar("SELECT count(DISTINCT id) FROM posts") == len(objs)
    pairs = cat.fetchall("SELECT post_id, tag FROM post_tags")
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == {(o["id"], t) for o in objs for t in o["tag_string_general"].split()}


def test_resume_continues_a_half_imported_shard_and_skips_finished_ones(tmp_path, monkeypatch):
    objs = synthetic_posts(500)
    dump = tmp_path / "dump"
    write_jsonl(dump / "s0.jsonl", objs[:200])
    s1 = write_parquet(dump / "s1.parquet", objs[200:], row_group_size=64)
    cat = fresh_catalogue(tmp_path)
    real = dump_import.write_post_tables
    calls = {"n": 0}

    def dies_on_the_ninth_batch(cur, post_tbl, tag_tbl):
        calls["n"] += 1
        if calls["n"] == 9:  # s0 = 4 batches of 50; s1 dies after 4 of its batches
            raise KeyboardInterrupt
        real(cur, post_tbl, tag_tbl)

    monkeypatch.setattr(dump_import, "write_post_tables", dies_on_the_ninth_batch)
    with pytest.raises(KeyboardInterrupt):
        import_metadata(cat, dump, batch_size=50, workers=0)
    # s1's position: the rows of its stored batches (row groups of 64 cut some batches short)
    position = cat.scalar("SELECT posts_seen FROM sync_state WHERE query_key LIKE ?",
                          [f"dump:{s1.resolve()}|%"])
    assert 0 < position < 300
    assert cat.scalar("SELECT count(*) FROM posts") == 200 + position
    monkeypatch.setattr(dump_import, "write_post_tables", real)
    s = import_metadata(cat, dump, batch_size=50, workers=0)
    assert s["skipped_shards"] == 1 and s["records"] == 300 - position  # s1's rest only
    assert_exact(cat, objs)


def test_progress_jsonl(tmp_path, run_gaudi):
    objs = synthetic_posts(120)
    write_jsonl(tmp_path / "d.jsonl", objs)
    prog = tmp_path / "p.jsonl"
    rc, out, err = run_gaudi("-w", tmp_path / "ws", "--progress-jsonl", prog, "import-metadata",
                             tmp_path / "d.jsonl", "--batch-size", "50", "--workers", "1")
    assert rc == 0, err
    recs = [json.loads(line) for line in prog.read_text().splitlines()]
    assert recs[0]["event"] == "start" and recs[0]["total"] == 120
    assert recs[-1]["event"] == "end" and recs[-1]["status"] == "ok" and recs[-1]["done"] == 120
    assert "120 posts stored" in out


def test_sigkill_mid_import_then_rerun_loses_and_duplicates_nothing(tmp_path):
    objs = synthetic_posts(40_000, seed=1)
    dump = tmp_path / "dump"
    for i in range(4):
        write_jsonl(dump / f"part-{i}.jsonl", objs[i * 10_000:(i + 1) * 10_000])
    ws = tmp_path / "ws"
    prog = tmp_path / "progress.jsonl"
    args = ["-w", ws, "import-metadata", dump, "--batch-size", "1000"]
    # killed with a parsing worker: it must end too (it would wait forever on its queue)
    killed = sigkill_when(["--progress-jsonl", prog, *args, "--workers", "1"],
                          lambda: progress_done(prog) >= 12_000,  # into the second shard
                          log=tmp_path / "killed.log")
    assert killed.children
    assert_ended(killed.children)
    rc, out, err = run_gaudi_cmd(*args, "--workers", "0", timeout=120)
    assert rc == 0, err
    assert "already imported, skipped" in out and not out.startswith("import-metadata: 0 posts")
    cat = open_catalogue(Workspace(ws).catalogue_path)
    try:
        assert_exact(cat, objs)
    finally:
        cat.close()


def test_a_transaction_of_several_chunks_with_repeated_ids(tmp_path, monkeypatch):
    """Chunks parsed apart, written in one transaction: a post repeated in a later chunk (a dump
    with an updated copy of it) ends up once, as its last copy."""
    monkeypatch.setattr(dump_import, "PARSE_CHUNK", 10)
    objs = synthetic_posts(60)
    updated = dict(objs[3], tag_string_general="tag_1 tag_2", rating="e")
    write_jsonl(tmp_path / "d.jsonl", objs + [updated])
    cat = fresh_catalogue(tmp_path)
    s = import_metadata(cat, tmp_path / "d.jsonl", batch_size=50, workers=0)
    assert s["records"] == 61 and s["transactions"] == 2  # 50 records, then 11 and the shard's end
    assert_exact(cat, objs[:3] + [updated] + objs[4:])
    assert cat.scalar("SELECT rating FROM posts WHERE id = ?", [updated["id"]]) == "e"
