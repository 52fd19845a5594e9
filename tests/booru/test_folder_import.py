"""import-folder: nested folders, tag normalisation, corrupt/empty images, hostile files (tests/hostile_files.py),
non-UTF-8 tag files, idempotent re-import."""
from __future__ import annotations

import hashlib

import pytest

from gaudi_engine.booru.folder_import import ID_BASE, folder_post_id, import_folder
from gaudi_engine.tags import normalise_tag, parse_sidecar
from gaudi_engine.catalogue import open_catalogue
from gaudi_engine.errors import GaudiError
from gaudi_engine.filenames import shown
from tests.hostile_files import image_bytes, write_hostile_folder


@pytest.fixture
def folder(tmp_path):
    """Good images of every format (nested), one corrupt, one zero-byte, one truncated, one
    without tags, one duplicate picture, plus files that are not images."""
    root = tmp_path / "my pics"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    files = {
        "a.png": (image_bytes("PNG", colour=(1, 2, 3)), "Long Hair, blue_eyes ,  SMILE\n1girl"),
        "sub/b.JPG": (image_bytes("JPEG", colour=(90, 2, 3)), "red dress,rating:e, Red Dress"),
        "sub/deeper/c.webp": (image_bytes("WEBP", colour=(3, 90, 3)), "star (sky),  night sky "),
        "sub/deeper/d.gif": (image_bytes("GIF", size=(20, 10), frames=3), "cat"),
        "sub/e.jpeg": (image_bytes("JPEG", colour=(3, 3, 90)), None),       # no sidecar
        "sub/copy_of_a.png": (image_bytes("PNG", colour=(1, 2, 3)), "ignored"),  # same picture
    }
    for rel, (data, tags) in files.items():
        (root / rel).write_bytes(data)
        if tags is not None:
            (root / rel).with_suffix(".txt").write_text(tags)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (root / "corrupt.txt").write_text("should, not, import")
    (root / "sub" / "empty.jpg").write_bytes(b"")
    (root / "sub" / "cut.png").write_bytes(image_bytes("PNG", size=(64, 64))[:60])
    (root / "notes.txt").write_text("not a sidecar of anything")
    (root / ".hidden" / "x.png").write_bytes(image_bytes("PNG", colour=(9, 9, 9)))
    return root, {rel: hashlib.md5(data).hexdigest() for rel, (data, _) in files.items()}


def test_tag_normalisation():
    assert normalise_tag("  Long   Hair ") == "long_hair"
    assert normalise_tag("Star_(Sky)") == "star_(sky)"
    tags, rating = parse_sidecar("Long Hair, long_hair,\nrating:Explicit , , smile")
    assert tags == ["long_hair", "smile"] and rating == "e"
    assert parse_sidecar("rating:q")[1] == "q" and parse_sidecar("a, rating:zz")[1] is None
    assert folder_post_id("f" * 32) < 2**63 and folder_post_id("0" * 32) == ID_BASE


def test_import_folder_cli_then_reimport(workspace, folder, run_gaudi):
    root, md5s = folder
    rc, out, err = run_gaudi("--workspace", workspace.root, "import-folder", root)
    assert rc == 0, err
    lines = err.strip().splitlines()
    assert sum("corrupt.png" in line for line in lines) == 1
    assert sum("empty.jpg" in line and "empty" in line for line in lines) == 1
    assert sum("cut.png" in line for line in lines) == 1
    assert any("e.jpeg" in line and "no tag file" in line for line in lines)
    assert "5 of 9 images imported" in out and "3 skipped" in out and "1 without tags" in out
    assert "corrupt.png" in out and "empty.jpg" in out  # named in the summary too

    cat = open_catalogue(workspace.catalogue_path)
    try:
        rows = {r[0]: r[1:] for r in cat.fetchall(
            "SELECT md5, id, file_ext, rating, width, height, source, origin FROM posts")}
        assert len(rows) == 5  # the duplicate picture is one post
        tags = {md5: [t for (t,) in cat.fetchall(
                "SELECT tag FROM post_tags WHERE post_id = ? ORDER BY tag", [r[0]])]
                for md5, r in rows.items()}
        a, b, c, d, e = (md5s[k] for k in ("a.png", "sub/b.JPG", "sub/deeper/c.webp",
                                           "sub/deeper/d.gif", "sub/e.jpeg"))
        assert tags[a] == ["1girl", "blue_eyes", "long_hair", "smile"]
        assert tags[b] == ["red_dress"] and rows[b][2] == "e" and rows[a][2] is None
        assert tags[c] == ["night_sky", "star_(sky)"] and tags[e] == []
        assert rows[d][1:5] == ("gif", None, 20, 10)
        assert rows[b][1] == "jpg" and rows[c][1] == "webp"
        assert rows[a][5] == "local:a.png" and rows[c][5] == "local:sub/deeper/c.webp"
        assert all(r[6] == f"folder:{root}" for r in rows.values())
        assert all(r[0] == folder_post_id(m) and r[0] >= 2**40 for m, r in rows.items())
        media = dict(cat.fetchall("SELECT md5, path FROM media WHERE status = 'ok'"))
        assert set(media) == set(rows)
        for m, path in media.items():
            on_disk = workspace.resolve(path)
            assert on_disk == workspace.image_path(m, rows[m][1])
            assert hashlib.md5(on_disk.read_bytes()).hexdigest() == m
        before = (cat.fetchall("SELECT * EXCLUDE (synced_at) FROM posts ORDER BY id"),
                  cat.fetchall("SELECT * FROM post_tags ORDER BY ALL"),
                  cat.fetchall("SELECT md5, path, bytes, status FROM media ORDER BY md5"))
        # re-import (in process this time) changes nothing
        s = import_folder(workspace, cat, root)
        assert s["imported"] == 5 and s["skipped"] == 3 and s["duplicates"] == 1
        after = (cat.fetchall("SELECT * EXCLUDE (synced_at) FROM posts ORDER BY id"),
                 cat.fetchall("SELECT * FROM post_tags ORDER BY ALL"),
                 cat.fetchall("SELECT md5, path, bytes, status FROM media ORDER BY md5"))
        assert after == before
        # an edited sidecar replaces that post's tags on the next import
        (root / "a.txt").write_text("Smile")
        import_folder(workspace, cat, root)
        assert cat.fetchall("SELECT tag FROM post_tags WHERE post_id = ?",
                            [folder_post_id(a)]) == [("smile",)]
    finally:
        cat.close()


def test_import_folder_errors(workspace, catalogue, tmp_path, run_gaudi):
    with pytest.raises(GaudiError, match="not a folder"):
        import_folder(workspace, catalogue, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GaudiError, match="no images"):
        import_folder(workspace, catalogue, tmp_path / "empty")
    rc, out, err = run_gaudi("--workspace", tmp_path / "ws2", "import-folder", tmp_path / "nope")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "not a folder" in err


def test_hostile_folder_names_each_bad_file_once_and_imports_every_good_one(workspace, tmp_path, run_gaudi):
    h = write_hostile_folder(tmp_path / "hostile ü", nested=True)
    rc, out, err = run_gaudi("--workspace", workspace.root, "import-folder", h.root)
    assert rc == 0 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    for name in h.bad:  # one line each, naming the file and why
        hits = [line for line in lines if name in line]
        assert len(hits) == 1, (name, lines)
    assert any("bomb.png" in line and "decompression bomb" in line for line in lines)
    assert any("empty.png" in line and "0 bytes" in line for line in lines)
    note = [line for line in (out + err).splitlines() if "not UTF-8" in line]  # once, in the summary
    assert len(note) == 1 and all(n in note[0] for n in h.not_utf8), (out, err)
    assert f"{len(h.good)} of {len(h.good) + len(h.bad)} images imported" in out
    cat = open_catalogue(workspace.catalogue_path)
    try:
        sources = {s.removeprefix("local:") for (s,) in cat.fetchall("SELECT source FROM posts")}
        assert sources == {shown(r) for r in h.good}  # a non-UTF-8 name stored as caf\xe9
        sizes = dict(cat.fetchall("SELECT source, width FROM posts"))
        strip = next(r for r in h.good if r.endswith("strip.png"))
        assert sizes[f"local:{strip}"] == 1 and any("café ünïcode 絵" in s for s in sizes)
        cmyk = next(r for r in h.good if r.endswith("cmyk.jpg"))
        tags = [t for (t,) in cat.fetchall("SELECT tag FROM post_tags JOIN posts ON id = post_id "
                                           "WHERE source = ? ORDER BY tag", [f"local:{cmyk}"])]
        assert tags == ["café", "naïve_smile", "‘quoted’"]  # cp1252 read as cp1252, not mojibake
    finally:
        cat.close()
