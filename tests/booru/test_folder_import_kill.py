"""`gaudi import-folder` killed with SIGKILL part-way and rerun: the catalogue and data/images end
exactly as after an uninterrupted import — every picture once, no post or media row twice, no
half-copied file left behind."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from gaudi_engine.catalogue import open_catalogue
from gaudi_engine.workspace import Workspace
from tests.conftest import run_gaudi_cmd
from tests.killing import files_under, kill_and_rerun, leftover_temp_files, progress_done

N_IMAGES = 2000  # import-folder writes the catalogue every 500 pictures: the kill comes after one


def _write_folder(root: Path) -> list[Path]:
    paths = []
    for i in range(N_IMAGES):
        a = np.zeros((6, 8, 3), np.uint8)
        a[...] = ((i * 37) % 256, (i * 91) % 256, i % 256)
        a[0, 0] = (i // 256, 7, 9)  # every picture distinct
        p = root / f"sub{i % 7}" / f"img {i:05d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(p)
        p.with_suffix(".txt").write_text(f"tag_{i % 13}, Shared Tag")
        paths.append(p)
    return paths


def _snapshot(ws: Path) -> dict:
    cat = open_catalogue(Workspace(ws).catalogue_path)
    try:
        return {"posts": cat.fetchall("SELECT id, md5, file_ext, file_size, width, height, source, raw "
                                      "FROM posts ORDER BY id"),
                "post_tags": cat.fetchall("SELECT post_id, tag FROM post_tags ORDER BY post_id, tag"),
                "media": cat.fetchall("SELECT md5, path, bytes, status FROM media ORDER BY md5")}
    finally:
        cat.close()


def test_import_folder_sigkill_then_rerun_equals_an_uninterrupted_import(tmp_path):
    folder = tmp_path / "pics"
    paths = _write_folder(folder)
    ws, prog = tmp_path / "ws", tmp_path / "progress.jsonl"
    # a copy cut by the kill: the hidden temp file of a picture the killed run never reached
    last = paths[-1].read_bytes()
    md5 = hashlib.md5(last).hexdigest()
    cut = Workspace(ws).ensure().image_path(md5, "png")
    cut = cut.parent / f".{cut.name}.999999.part"
    cut.parent.mkdir(parents=True, exist_ok=True)
    cut.write_bytes(last[: len(last) // 2])
    rc, out, err = kill_and_rerun(["-w", ws, "--progress-jsonl", prog, "import-folder", folder],
                                  lambda: progress_done(prog, "import-folder") >= 700,
                                  log=tmp_path / "killed.log", rerun_args=["-w", ws, "import-folder", folder])
    assert rc == 0, err
    assert f"{N_IMAGES} of {N_IMAGES} images imported" in out, out
    rc, out, err = run_gaudi_cmd("-w", tmp_path / "straight", "import-folder", folder)
    assert rc == 0, err
    got, want = _snapshot(ws), _snapshot(tmp_path / "straight")
    assert len(got["posts"]) == len({p[0] for p in got["posts"]}) == N_IMAGES
    assert got == want
    assert files_under(ws / "data" / "images") == files_under(tmp_path / "straight" / "data" / "images")
    assert leftover_temp_files(ws / "data") == []
