"""`gaudi pseudolabels` / `infer` / `train-segmenter` as subprocesses: bad input gives one clear
line (exit 2, no traceback); corrupt images are skipped with a warning; JSON/masks layout."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from gaudi_engine import rle
from tests.conftest import run_gaudi_many


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from gaudi_engine import synth
    from gaudi_engine.models.checkpoint import save_checkpoint
    from gaudi_engine.models.registry import create_align_model
    from gaudi_engine.train.align import align_payload

    root = tmp_path_factory.mktemp("cli")
    info = synth.generate(root / "data", 6, seed=2, size=(64, 80))
    torch.manual_seed(0)
    model = create_align_model("gaudi-tiny", image_size=64)
    vocab = list(synth.SYNTH_TAGS)
    save_checkpoint(root / "align.pt", align_payload(model, vocab, synth.TAG_DESCRIPTIONS))
    (root / "corrupt.pt").write_bytes(b"not a checkpoint at all")
    return root, info


def _one_line_error(rc, err, *words):
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_checkpoints_and_manifest(setup, tmp_path):
    root, info = setup
    empty = tmp_path / "empty.csv"
    empty.write_text("post_id,image_path,tags,md5,rating,width,height\n")

    def pseudo(i: int, *args):  # each call its own --out: the calls run side by side
        return ["--workspace", tmp_path, "pseudolabels", "--manifest", info["manifest"], "--tag-desc",
                info["tag_descriptions"], "--out", tmp_path / f"o{i}", *args]

    # seven independent bad calls, two at a time (each is still its own `gaudi` process)
    results = run_gaudi_many(
        pseudo(1, "--align-ckpt", root / "missing.pt"),
        pseudo(2, "--align-ckpt", root / "corrupt.pt"),
        pseudo(3, "--align-ckpt", root / "align.pt", "--reject-quantile", "1.5"),
        pseudo(4, "--align-ckpt", root / "align.pt", "--fine-zoom", "0.5"),
        ["--workspace", tmp_path, "pseudolabels", "--manifest", empty, "--align-ckpt", root / "align.pt",
         "--out", tmp_path / "o5"],
        ["--workspace", tmp_path, "infer", "--image", root / "data/images/000000.png", "--tags", "sky",
         "--segmenter-ckpt", root / "align.pt"],
        ["--workspace", tmp_path, "train-segmenter", "--manifest", info["manifest"], "--out", tmp_path / "s",
         "--pseudomasks", tmp_path / "nowhere", "--init-from", root / "align.pt"])
    expected = [("--align-ckpt", "not found"), ("corrupt",), ("--reject-quantile",), ("--fine-zoom",),
                ("no rows",), ("not a segmenter",), ("index",)]
    for (rc, _, err), words in zip(results, expected):
        _one_line_error(rc, err, *words)


def test_corrupt_image_skipped_and_unknown_tag(setup, run_gaudi, tmp_path):
    root, info = setup
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    (data / "images" / "000001.png").write_bytes(b"\x89PNG broken")
    with open(data / "manifest.csv", "a") as fh:  # a post with a tag nobody described
        fh.write("99,images/000002.png,sky mystery_tag,x,g,64,64\n")
    rc, out, err = run_gaudi("--workspace", tmp_path, "pseudolabels", "--manifest", data / "manifest.csv",
                             "--tag-desc", data / "tag_descriptions.json", "--align-ckpt", root / "align.pt",
                             "--out", tmp_path / "pm")
    assert rc == 0, err
    assert "Traceback" not in err
    assert "warning: skipping post 2" in err and "mystery_tag" in err
    assert "1 unreadable" in out
    import pandas as pd

    idx = pd.read_parquet(tmp_path / "pm" / "index.parquet")
    assert 2 not in set(idx["post_id"]) and "mystery_tag" in set(idx["tag"])
    assert set(idx["post_id"]) == {1, 3, 4, 5, 6, 99}
    # rerun: everything already done is skipped, the index is unchanged
    rc, out, _ = run_gaudi("--workspace", tmp_path, "pseudolabels", "--manifest", data / "manifest.csv",
                           "--align-ckpt", root / "align.pt", "--out", tmp_path / "pm")
    assert rc == 0 and "0 posts labelled, 6 already done" in out
    assert pd.read_parquet(tmp_path / "pm" / "index.parquet").equals(idx)


def test_infer_batch_json_and_masks(setup, tmp_path):
    root, info = setup
    imgs = tmp_path / "imgs"
    shutil.copytree(root / "data" / "images", imgs)
    (imgs / "000003.png").write_bytes(b"garbage")
    (imgs / "000004.txt").unlink()  # no sidecar and no --tags: skipped with a warning
    # batch mode and single mode (below) side by side: neither reads what the other writes
    (rc, out, err), single = run_gaudi_many(
        ["--workspace", tmp_path, "infer", "--images", imgs, "--out-dir", tmp_path / "D", "--masks-dir",
         tmp_path / "M", "--align-ckpt", root / "align.pt", "--threshold", "0.05"],
        ["--workspace", tmp_path, "infer", "--image", imgs / "000000.png", "--tags", "sky unknown_tag", "--out",
         tmp_path / "one.json", "--viz", tmp_path / "one.png", "--align-ckpt", root / "align.pt"])
    assert rc == 0, err
    assert "4 images done, 2 skipped" in out and err.count("warning:") >= 2
    for name in ("000000", "000001", "000002", "000005"):
        res = json.loads((tmp_path / "D" / f"{name}.json").read_text())
        assert set(res) >= {"image", "width", "height", "tags", "model"}
        w, h = Image.open(imgs / f"{name}.png").size
        assert (res["width"], res["height"]) == (w, h)
        sidecar = [t.strip().replace(" ", "_") for t in (imgs / f"{name}.txt").read_text().split(",")]
        assert [t["tag"] for t in res["tags"]] == sidecar
        for t in res["tags"]:
            assert set(t) == {"tag", "score", "area", "bbox", "mask"}
            m = rle.decode(t["mask"])
            assert m.shape == (h, w) and m.sum() == t["area"]
            png = np.asarray(Image.open(tmp_path / "M" / name / f"{t['tag']}.png"))
            assert png.shape == (h, w) and set(np.unique(png)) <= {0, 255}
            np.testing.assert_array_equal(png > 127, m)
        assert Image.open(tmp_path / "D" / f"{name}.png").size == (w, h)
    # single mode with an undescribed tag: a warning, still a mask
    rc, out, err = single
    assert rc == 0, err
    assert "unknown_tag" in err and "warning" in err
    res = json.loads((tmp_path / "one.json").read_text())
    assert [t["tag"] for t in res["tags"]] == ["sky", "unknown_tag"]


def test_config_file_and_set_reach_the_run_and_its_workers(setup, tmp_path):
    """`--config FILE` then the shorthand flags then `--set`; the run's config.json holds the whole
    effective config, shard workers read it from there (they get no flag of it), and a bad key is
    one clear line."""
    root, info = setup
    base = ["--workspace", tmp_path, "pseudolabels", "--manifest", info["manifest"], "--tag-desc",
            info["tag_descriptions"], "--align-ckpt", root / "align.pt"]
    knobs = tmp_path / "knobs.json"
    knobs.write_text(json.dumps({"cam": {"mode": "all"}, "validators": {"reject_quantile": 0.3}, "aff_iters": 2}))
    # the run and two bad calls (their own --out each) side by side: none reads what another writes
    (rc, _, err), bad_key, bad_value = run_gaudi_many(
        [*base, "--out", tmp_path / "w", "--workers", "2", "--config", knobs, "--no-affinity",
         "--set", "validators.reject_quantile=0.2", "--set", "stuff_span=0.8"],
        [*base, "--out", tmp_path / "o1", "--set", "validators.nope=1"],
        [*base, "--out", tmp_path / "o2", "--set", "aff_iters=many"], workers=3)
    assert rc == 0, err
    run = json.loads((tmp_path / "w" / "config.json").read_text())
    from gaudi_engine.pseudo.config import PseudoConfig, load_config

    expected = PseudoConfig(aff_iters=2, affinity=False, stuff_span=0.8)
    expected.cam.mode, expected.validators.reject_quantile = "all", 0.2
    assert run["pseudo"] == json.loads(json.dumps(expected.to_dict()))
    assert run["round"] == 1 and "parts" in run  # written last by a worker, from the file it read
    assert load_config(tmp_path / "w" / "config.json") == expected  # the run can be redone from it
    assert (tmp_path / "w" / "parts" / "shard-0-of-2.jsonl").exists() and (tmp_path / "w" / "structure.json").exists()
    _one_line_error(bad_key[0], bad_key[2], "validators.nope", "unknown setting")
    _one_line_error(bad_value[0], bad_value[2], "aff_iters")
