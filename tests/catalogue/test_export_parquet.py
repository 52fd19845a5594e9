"""`gaudi export-catalogue --parquet DIR`: shards DuckDB reads in place, the same rows back,
no secrets, reruns replace."""
from __future__ import annotations

import json

import duckdb
import orjson
import pytest

from gaudi_engine.booru.dump_import import import_metadata
from gaudi_engine.catalogue import open_catalogue
from gaudi_engine.catalogue.parquet_export import export_parquet
from gaudi_engine.catalogue.store import upsert_tags
from gaudi_engine.errors import GaudiError
from gaudi_engine.workspace import Workspace
from tests.catalogue.test_import_metadata import synthetic_posts, write_jsonl

SECRET = "s3cr3t-api-key-0042"


@pytest.fixture
def filled(tmp_path):
    """A catalogue with posts (one banned, one deleted), tags and descriptions."""
    objs = synthetic_posts(3000, seed=2)
    objs[5].pop("md5"), objs[5].pop("file_url")
    objs[5]["is_banned"] = True
    objs[6]["is_deleted"] = True
    write_jsonl(tmp_path / "d.jsonl", objs)
    ws = Workspace(tmp_path / "ws").ensure()
    cat = open_catalogue(ws.catalogue_path)
    import_metadata(cat, tmp_path / "d.jsonl", workers=0,
                    origin=f"https://someone:{SECRET}@booru.example/?login=someone&api_key={SECRET}")
    upsert_tags(cat, [{"name": f"tag_{i}", "category": 0, "post_count": 10 * i} for i in range(300)])
    cat.execute("INSERT INTO tag_descriptions VALUES ('tag_1', 0, 'a first description', 'user', now()), "
                "('tag_1', 1, 'another one', 'wiki', now()), ('tag_2', 0, 'só ünïcode', 'llm', now())")
    yield ws, cat
    cat.close()


def q(sql: str) -> list[tuple]:
    """A query on a fresh in-memory DuckDB, as a user reading the export would run it."""
    return duckdb.connect().execute(sql).fetchall()


def read_back(out, table, cols="*", order="1"):
    return q(f"SELECT {cols} FROM '{out}/{table}/*.parquet' ORDER BY {order}")


def test_export_round_trips_through_duckdb(filled, tmp_path):
    ws, cat = filled
    out = tmp_path / "export"
    s = export_parquet(cat, out, rows_per_file=1000)
    assert set(s) == {"posts", "post_tags", "tags", "descriptions"}
    assert s["posts"]["rows"] == 3000 and s["post_tags"]["rows"] == 3000 * 20
    # DuckDB rounds row groups up to its 2048-row vectors: "about" rows_per_file per file
    assert s["posts"]["files"] >= 2 and s["post_tags"]["files"] >= 20 and s["tags"]["files"] == 1
    for table in s:
        assert sorted(p.name for p in (out / table).iterdir()) == \
            sorted(f"{table}_{i}.parquet" for i in range(s[table]["files"]))
    cols = ("id, md5, file_ext, file_size, rating, width, height, file_url, is_deleted, is_banned, "
            "created_at, general_tags")
    assert read_back(out, "posts", cols) == cat.fetchall(f"SELECT {cols} FROM posts ORDER BY 1")
    assert read_back(out, "post_tags", order="1, 2") == \
        cat.fetchall("SELECT post_id, tag FROM post_tags ORDER BY 1, 2")
    assert read_back(out, "tags", "name, category, post_count, is_deprecated") == \
        cat.fetchall("SELECT name, category, post_count, is_deprecated FROM tags ORDER BY 1")
    assert read_back(out, "descriptions", "tag, idx, text, source", "1, 2") == \
        [("tag_1", 0, "a first description", "user"), ("tag_1", 1, "another one", "wiki"),
         ("tag_2", 0, "só ünïcode", "llm")]
    raw = dict(q(f"SELECT id, raw FROM '{out}/posts/*.parquet'"))
    assert json.loads(raw[7]) == json.loads(cat.scalar("SELECT raw FROM posts WHERE id = 7"))
    # the banned and the deleted post as the catalogue has them
    assert q(f"SELECT id FROM '{out}/posts/*.parquet' WHERE md5 IS NULL") == [(6,)]
    assert q(f"SELECT id FROM '{out}/posts/*.parquet' WHERE is_deleted") == [(7,)]


def test_no_secret_in_the_export(filled, tmp_path):
    ws, cat = filled
    assert SECRET in cat.scalar("SELECT any_value(origin) FROM posts")  # the trap is set
    out = tmp_path / "export"
    export_parquet(cat, out)
    origins = q(f"SELECT DISTINCT origin FROM '{out}/posts/*.parquet'")
    assert origins == [("https://booru.example/?login=REDACTED&api_key=REDACTED",)]
    for table in ("posts", "post_tags", "tags", "descriptions"):
        text = orjson.dumps(q(f"SELECT * FROM '{out}/{table}/*.parquet'"), default=str).decode()
        assert SECRET not in text, table


def test_rerun_replaces_and_foreign_folders_are_refused(filled, tmp_path, run_gaudi):
    ws, cat = filled
    out = tmp_path / "export"
    export_parquet(cat, out)
    cat.execute("DELETE FROM tag_descriptions WHERE tag = 'tag_2'")
    export_parquet(cat, out)
    assert len(read_back(out, "descriptions")) == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left
    (out / "tags" / "notes.txt").write_text("mine")
    with pytest.raises(GaudiError, match="holds files other than"):
        export_parquet(cat, out)
    assert (out / "tags" / "notes.txt").exists() and len(read_back(out, "posts", "id")) == 3000
    cat.close()
    # the command: one line, relative to the workspace
    rc, stdout, err = run_gaudi("-w", ws.root, "export-catalogue", "--parquet", "pq")
    assert rc == 0, err
    assert "posts 3000 rows" in stdout and "post_tags 60000 rows" in stdout
    assert (ws.root / "pq" / "posts" / "posts_0.parquet").exists()
    rc, stdout, err = run_gaudi("-w", tmp_path / "nowhere", "export-catalogue", "--parquet", "x")
    assert rc == 2 and "no catalogue" in err and len(err.strip().splitlines()) == 1
