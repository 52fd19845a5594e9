"""`gaudi pseudolabels --progress-jsonl`: every pass reports progress as it goes — loading the
models, the calibration of masks, the solo-colour pass of tags that imply each other, the
validators' floors, then the labelling — each with its total and counts that reach it, so the
studio's bar never sits at "0/?" through a silent pass; and the run's lineage records it."""
from __future__ import annotations

import csv
import json

import torch

from gaudi_engine import progress
from gaudi_engine.cli import main
from gaudi_engine.jobs import read_progress


def test_every_calibration_pass_reports_progress(tmp_path):
    from gaudi_engine import synth
    from gaudi_engine.models.checkpoint import save_checkpoint
    from gaudi_engine.models.registry import create_align_model
    from gaudi_engine.train.align import align_payload

    info = synth.generate(tmp_path / "data", 40, seed=3, size=(64, 80))
    torch.manual_seed(0)
    model = create_align_model("gaudi-tiny", image_size=64)
    save_checkpoint(tmp_path / "align.pt", align_payload(model, list(synth.SYNTH_TAGS), synth.TAG_DESCRIPTIONS))
    # ocean and beach imply each other (>= 90 % both ways); one post shows the ocean without the
    # beach: the solo pass
    rows = list(csv.DictReader(open(info["manifest"])))
    both = [r for r in rows if {"ocean", "beach"} <= set(r["tags"].split())]
    assert len(both) >= 10 and all("ocean" in r["tags"].split() for r in rows if "beach" in r["tags"].split())
    with open(info["manifest"], "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        for i, r in enumerate(both[:1]):
            w.writerow({**r, "post_id": 900 + i, "tags": " ".join(t for t in r["tags"].split() if t != "beach")})
    prog = tmp_path / "progress.jsonl"
    try:  # in this process (torch and open_clip are loaded already): the test stays short
        rc = main(["--workspace", str(tmp_path), "--progress-jsonl", str(prog), "pseudolabels",
                   "--manifest", info["manifest"], "--align-ckpt", str(tmp_path / "align.pt"),
                   "--limit", "2", "--set", "validators.calib_sample=6"])
    finally:
        progress.set_default_jsonl(None)
    assert rc == 0
    events = [json.loads(line) for line in prog.read_text().splitlines()]
    stages = list(dict.fromkeys(e["stage"] for e in events))
    assert stages == ["load-models", "calibrate-masks", "calibrate-looks ocean/beach", "calibrate-floors",
                      "pseudolabels"], stages
    for stage in stages:
        mine = [e for e in events if e["stage"] == stage]
        start, end = mine[0], mine[-1]
        assert start["event"] == "start" and start["total"] > 0, start
        assert end["event"] == "end" and end["status"] == "ok" and end["done"] == start["total"], end
        counts = [e["done"] for e in mine if e["event"] == "progress"]
        assert counts and counts == sorted(counts) and counts[-1] == start["total"], (stage, counts)
    looks = [e for e in events if e["stage"] == "calibrate-looks ocean/beach"]
    assert looks[0]["total"] == 1
    # the passes before the labelling are preludes: the studio shows their counts, while the bar
    # (the command's own fraction) waits at 0 instead of running to 100 % and back for each pass
    assert all(e.get("prelude") is (None if e["stage"] == "pseudolabels" else True) for e in events)
    lines = prog.read_text().splitlines()
    first_label = next(i for i, e in enumerate(events) if e["stage"] == "pseudolabels")
    (tmp_path / "head.jsonl").write_text("\n".join(lines[:first_label]) + "\n")
    view = read_progress(tmp_path / "head.jsonl")
    assert (view.stage, view.done, view.total, view.fraction) == ("calibrate-floors", 6, 6, 0.0)
    assert read_progress(prog).fraction == 1.0
    lineage = json.loads((tmp_path / "runs" / "pseudomasks_v1" / "lineage.json").read_text())
    assert lineage["status"] == "done" and lineage["expected"] == {"posts": 2}
