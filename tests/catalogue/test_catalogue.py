"""Catalogue schema: version, migrations, a newer file, and a catalogue locked by another process."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from gaudi_engine.catalogue import SCHEMA_VERSION, db, open_catalogue
from gaudi_engine.errors import CatalogueLocked, GaudiError
from tests.conftest import REPO_ROOT, gaudi_env

TABLES = {"schema_meta", "posts", "post_tags", "tags", "wiki_pages", "tag_descriptions", "media",
          "sync_state", "runs"}


def test_init_db_creates_schema(workspace, run_gaudi):
    rc, out, err = run_gaudi("--workspace", workspace.root, "init-db")
    assert rc == 0, err
    assert f"schema version {SCHEMA_VERSION}" in out
    cat = open_catalogue(workspace.catalogue_path)
    try:
        tables = {t for (t,) in cat.fetchall("SELECT table_name FROM information_schema.tables")}
        assert TABLES <= tables
        assert cat.schema_version() == SCHEMA_VERSION
        assert cat.migrate() == SCHEMA_VERSION  # idempotent
    finally:
        cat.close()
    rc, out, err = run_gaudi("--workspace", workspace.root, "init-db")  # again: nothing breaks
    assert rc == 0, err


def test_migration_runs_once(workspace, monkeypatch):
    cat = open_catalogue(workspace.catalogue_path)
    cat.execute("INSERT INTO posts (id, md5) VALUES (1, 'x')")
    cat.close()
    monkeypatch.setattr(db, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(db.MIGRATIONS, SCHEMA_VERSION + 1,
                        "ALTER TABLE posts ADD COLUMN score INTEGER DEFAULT 7")
    cat = open_catalogue(workspace.catalogue_path)
    try:
        assert cat.schema_version() == SCHEMA_VERSION + 1
        assert cat.fetchall("SELECT id, md5, score FROM posts") == [(1, "x", 7)]
        assert cat.migrate() == SCHEMA_VERSION + 1  # already there: no second ALTER
    finally:
        cat.close()


def test_newer_catalogue_is_refused(workspace):
    cat = open_catalogue(workspace.catalogue_path)
    cat.execute("UPDATE schema_meta SET value = ? WHERE key = 'schema_version'",
                [str(SCHEMA_VERSION + 5)])
    cat.close()
    with pytest.raises(GaudiError, match="newer than this GaUDI"):
        open_catalogue(workspace.catalogue_path)


def test_not_a_catalogue(workspace, run_gaudi):
    workspace.catalogue_path.write_bytes(b"this is not a duckdb file" * 100)
    rc, out, err = run_gaudi("--workspace", workspace.root, "stats")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "cannot open catalogue" in err


def test_locked_catalogue_gives_one_line(workspace, run_gaudi):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from gaudi_engine.catalogue import open_catalogue
            cat = open_catalogue({str(workspace.catalogue_path)!r})
            print("holding", flush=True)
            sys.stdin.read()  # until the test closes our stdin
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=gaudi_env(),
        cwd=REPO_ROOT)
    try:
        assert holder.stdout.readline().strip() == "holding"
        for command in (["init-db"], ["stats"], ["export-manifest"], ["fetch-images"],
                        ["import-folder", str(workspace.root)]):
            rc, out, err = run_gaudi("--workspace", workspace.root, *command)
            assert rc == 2, (command, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "in use by another process" in lines[0], (command, err)
            assert f"PID {holder.pid}" in lines[0] and "Traceback" not in err
        with pytest.raises(CatalogueLocked):
            db.Catalogue(workspace.catalogue_path)
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
