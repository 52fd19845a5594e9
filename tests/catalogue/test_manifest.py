"""export-manifest: only posts whose image is on disk and that are not deleted; general tags."""
from __future__ import annotations

import csv

from gaudi_engine.booru.media import upsert_media
from gaudi_engine.catalogue import open_catalogue
from gaudi_engine.catalogue.manifest import COLUMNS, export_manifest
from gaudi_engine.catalogue.queries import counts, latest_posts, post_image_path
from gaudi_engine.catalogue.store import upsert_posts


def post(pid: int, md5: str | None, tags: list[str], **kw) -> dict:
    row = {"id": pid, "md5": md5, "file_ext": "png", "file_size": 10, "rating": "g", "width": 8,
           "height": 6, "file_url": f"http://x/{md5}.png" if md5 else None,
           "large_file_url": None, "preview_url": None, "source": f"s{pid}", "origin": "http://x",
           "created_at": None, "raw": "{}", "general_tags": tags}
    row.update(kw)
    return row


def build(ws, cat) -> None:
    """Posts in every state the manifest must tell apart."""
    md5 = {k: k * 32 for k in "abcdefg"}
    upsert_posts(cat, [
        post(1, md5["a"], ["smile", "1girl", "long_hair"], rating="s"),   # on disk
        post(2, md5["b"], ["hat"]),                                        # ok row, file gone
        post(3, md5["c"], ["hat"], is_deleted=True),                       # deleted, on disk
        post(4, None, ["hat"], is_banned=True),                            # banned: no md5
        post(5, md5["d"], ["hat"]),                                        # failed download
        post(6, md5["e"], ["cat"], file_ext="mp4"),                        # not an image
        post(7, md5["f"], []),                                             # on disk, no tags
        post(8, md5["g"], ["dog"]),                                        # not fetched yet
    ])
    rows = []
    for k in "abcf":
        path = ws.image_path(md5[k], "png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png" + k.encode())
        rows.append({"md5": md5[k], "path": ws.rel(path), "bytes": 4, "status": "ok"})
    ws.image_path(md5["b"], "png").unlink()
    rows += [{"md5": md5["d"], "status": "failed", "error": "HTTP 500"},
             {"md5": md5["e"], "status": "not_image", "error": "mp4"}]
    upsert_media(cat, rows)


def read(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_manifest_rows(workspace, catalogue):
    build(workspace, catalogue)
    n = export_manifest(workspace, catalogue)
    rows = read(workspace.data_dir / "manifest.csv")
    assert n == len(rows) == 2
    assert list(rows[0]) == COLUMNS and COLUMNS[:7] == ["post_id", "image_path", "tags", "md5",
                                                        "rating", "width", "height"]
    first, second = rows
    assert first == {"post_id": "1", "image_path": f"data/images/aa/aa/{'a' * 32}.png",
                     "tags": "1girl long_hair smile", "md5": "a" * 32, "rating": "s",
                     "width": "8", "height": "6", "file_ext": "png", "source": "s1"}
    assert second["post_id"] == "7" and second["tags"] == ""
    assert not list(workspace.data_dir.glob(".*.tmp"))


def test_queries(workspace, catalogue):
    build(workspace, catalogue)
    c = counts(catalogue)
    assert c["posts"] == 8 and c["deleted"] == 1 and c["banned"] == 1
    # b: ok row but file gone still reads ok here; `fetch-images` re-downloads it
    assert c["media"] == {"ok": 4, "failed": 1, "not_downloadable": 1, "not_image": 1, "pending": 1}
    latest = latest_posts(catalogue, limit=3)
    assert [p["id"] for p in latest] == [8, 7, 6] and latest[0]["image_path"] is None
    hats = latest_posts(catalogue, tag="Hat")
    assert [p["id"] for p in hats] == [5, 4, 3, 2] and hats[-1]["tags"] == ["hat"]
    assert [p["id"] for p in latest_posts(catalogue, tag="hat", with_image=True)] == [3, 2]
    assert latest_posts(catalogue, limit=2, offset=6)[0]["id"] == 2
    assert latest_posts(catalogue, tag="nope") == []
    assert post_image_path(workspace, catalogue, 1) == workspace.image_path("a" * 32, "png")
    assert post_image_path(workspace, catalogue, 2) is None   # file gone
    assert post_image_path(workspace, catalogue, 4) is None   # banned
    assert post_image_path(workspace, catalogue, 99) is None


def test_export_manifest_cli(workspace, run_gaudi, tmp_path):
    cat = open_catalogue(workspace.catalogue_path)
    build(workspace, cat)
    cat.close()
    rc, out, err = run_gaudi("--workspace", workspace.root, "export-manifest", "--out", "m/x.csv")
    assert rc == 0, err
    assert "2 posts" in out and "m/x.csv" in out
    assert [r["post_id"] for r in read(workspace.root / "m" / "x.csv")] == ["1", "7"]
    rc, out, err = run_gaudi("--workspace", tmp_path / "empty_ws", "export-manifest")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "no catalogue" in err
