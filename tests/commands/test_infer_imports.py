"""A CLI `gaudi infer` imports only what it uses: gaudi-lite0/2 checkpoints load through the lean
towers (models/lean.py), so neither open_clip nor timm, torchvision or torch._dynamo (~4 s on
2 cores), and nothing of the catalogue, studio or training stacks."""
import json
import subprocess
import sys

import pytest
import torch

NOT_NEEDED = ("open_clip", "timm", "torchvision", "torch._dynamo", "sympy", "transformers", "huggingface_hub",
              "pandas", "pyarrow", "duckdb", "gradio", "matplotlib", "tensorboard", "torch.utils.tensorboard")

PROBE = """
import sys
from gaudi_engine.cli import main
rc = main({argv!r})
print("LOADED=" + ",".join(m for m in {mods!r} if m in sys.modules))
print("RC=%d" % rc)
"""


@pytest.fixture(scope="module", params=["gaudi-lite0", "gaudi-lite2"])
def lite_runs(tmp_path_factory, request):
    from gaudi_engine import synth
    from gaudi_engine.models.checkpoint import save_run_checkpoints
    from gaudi_engine.models.registry import create_align_model
    from gaudi_engine.models.segmenter import TextSegmenter, segmenter_payload
    from gaudi_engine.train.align import align_payload

    root = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    align = create_align_model(request.param, pretrained="none", image_size=64)
    payload = align_payload(align, ["sky", "grass"], {"sky": ["a blue sky"], "grass": ["green grass"]})
    resume = {"optimizer": {"state": {}, "param_groups": []}, "scheduler": {}, "scaler": {}, "rng": {}}
    save_run_checkpoints(root / "runs" / "align_t" / "checkpoints", {**payload, **resume})
    seg = TextSegmenter(align, dec_dim=16)
    save_run_checkpoints(root / "runs" / "seg_t" / "checkpoints",
                         {**segmenter_payload(seg, {k: v for k, v in payload.items() if k != "state_dict"}), **resume})
    synth.render_scene(11, 72)[0].save(root / "pic.png")
    return root


@pytest.mark.parametrize("ckpt", [["--align-ckpt", "runs/align_t"],  # a run folder -> its model.pt
                                  ["--segmenter-ckpt", "runs/seg_t/checkpoints/model.pt"]])
def test_cli_infer_imports_only_what_it_uses(lite_runs, ckpt):
    root = lite_runs
    # "red_kite" is not in the checkpoint's vocabulary: the tokenizer and the text tower run too
    argv = ["--workspace", str(root), "infer", "--image", str(root / "pic.png"), "--tags", "sky red_kite",
            *ckpt, "--out", str(root / "o.json"), "--viz", str(root / "o.png")]
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, mods=NOT_NEEDED)], capture_output=True,
                         text=True, cwd=root, timeout=300)
    assert "RC=0" in out.stdout, out.stdout + out.stderr
    assert "LOADED=\n" in out.stdout, f"gaudi infer imported {out.stdout.split('LOADED=')[1].splitlines()[0]}"
    result = json.loads((root / "o.json").read_text())
    assert [t["tag"] for t in result["tags"]] == ["sky", "red_kite"]
    assert result["model"]["align_ckpt" if ckpt[0] == "--align-ckpt" else "segmenter_ckpt"].endswith("model.pt")
