"""`gaudi infer` over hostile files (tests/hostile_files.py): a batch names each bad file in one
line and writes every good one; single mode gives one line and exit 2 for a bad file."""
import json

import pytest
import torch

from tests.hostile_files import LATIN1_NAME, write_hostile_folder


@pytest.fixture(scope="module")
def align_ckpt(tmp_path_factory):
    from gaudi_engine import synth
    from gaudi_engine.models.checkpoint import save_checkpoint
    from gaudi_engine.models.registry import create_align_model
    from gaudi_engine.train.align import align_payload

    path = tmp_path_factory.mktemp("ckpt") / "align.pt"
    torch.manual_seed(0)
    model = create_align_model("gaudi-tiny", image_size=64)
    save_checkpoint(path, align_payload(model, list(synth.SYNTH_TAGS), synth.TAG_DESCRIPTIONS))
    return path


def test_batch_skips_each_bad_file_with_one_line_and_writes_every_good_one(align_ckpt, tmp_path, run_gaudi):
    h = write_hostile_folder(tmp_path / "in ü")
    rc, out, err = run_gaudi("--workspace", tmp_path, "infer", "--images", h.root, "--out-dir", tmp_path / "D",
                             "--masks-dir", tmp_path / "M", "--align-ckpt", align_ckpt, "--threshold", "0.05")
    assert rc == 0 and "Traceback" not in err and "internal error" not in err, err
    lines = err.strip().splitlines()
    for name in h.bad:
        assert sum(f"skipping {name}:" in line for line in lines) == 1, (name, lines)
    assert any("bomb.png" in line and "decompression bomb" in line for line in lines)
    assert sum("not UTF-8" in line for line in lines) == 1  # said once for the run
    assert f"{len(h.good)} images done, {len(h.bad)} skipped" in out
    latin1 = json.loads((tmp_path / "D" / f"{LATIN1_NAME[:-4]}.json").read_text(encoding="utf-8"))
    assert latin1["image"] == "caf\\xe9 latin1.png"  # a name that is not UTF-8, shown with an escape
    for rel in h.good:
        stem = rel.rsplit(".", 1)[0]
        res = json.loads((tmp_path / "D" / f"{stem}.json").read_text(encoding="utf-8"))
        assert res["tags"] and (tmp_path / "D" / f"{stem}.png").is_file()
        assert (tmp_path / "M" / stem).is_dir()
    cmyk = json.loads((tmp_path / "D" / "cmyk.json").read_text(encoding="utf-8"))
    assert [t["tag"] for t in cmyk["tags"]] == ["café", "naïve_smile", "‘quoted’"]
    strip = json.loads((tmp_path / "D" / "strip.json").read_text(encoding="utf-8"))
    assert (strip["width"], strip["height"]) == (1, 8000)


def test_single_bad_file_is_one_line_and_exit_2(align_ckpt, tmp_path, run_gaudi):
    from gaudi_engine.errors import GaudiError
    from gaudi_engine.infer import Predictor, infer_single

    h = write_hostile_folder(tmp_path / "in")
    pred = Predictor(align_ckpt)
    why = {"bomb.png": "decompression bomb", "page.png": "not a picture", "empty.png": "0 bytes",
           "cut.png": "truncated", "cut.jpg": "truncated"}
    for name in h.bad:
        with pytest.raises(GaudiError) as err:
            infer_single(pred, h.root / name, "sky", tmp_path / "o.json")
        msg = str(err.value)
        assert msg.startswith(f"{name}: ") and why[name] in msg and "\n" not in msg, msg
    rc, out, err = run_gaudi("--workspace", tmp_path, "infer", "--image", h.root / "bomb.png", "--tags", "sky",
                             "--out", tmp_path / "o.json", "--align-ckpt", align_ckpt)
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "bomb.png" in lines[0] and "decompression bomb" in lines[0]


def test_single_good_file_with_a_non_ascii_name_and_a_cp1252_sidecar(align_ckpt, tmp_path, run_gaudi):
    h = write_hostile_folder(tmp_path / "in")
    img = h.root / "café ünïcode 絵.jpg"
    (h.root / "café ünïcode 絵.txt").write_bytes("ciel étoilé, sky".encode("cp1252"))
    rc, out, err = run_gaudi("--workspace", tmp_path, "infer", "--image", img, "--out", tmp_path / "o.json",
                             "--viz", tmp_path / "o.png", "--align-ckpt", align_ckpt)
    assert rc == 0, err
    assert sum("not UTF-8" in line for line in err.splitlines()) == 1
    res = json.loads((tmp_path / "o.json").read_text(encoding="utf-8"))
    assert [t["tag"] for t in res["tags"]] == ["ciel_étoilé", "sky"] and (tmp_path / "o.png").is_file()
