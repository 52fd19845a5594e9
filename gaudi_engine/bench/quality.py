"""`gaudi bench quality`: the whole weak pipeline on SynthBooru, scored against ground truth that
the pipeline never sees (train split for learning, test split for scoring).

Rows (DESIGN §9): CAM only; pseudo v1 (accepted) + validators' precision; segmenter s1; pseudo
v2; segmenter s2; oracle (the same segmenter, same epochs, trained on GT masks); plus ablations
of the pseudo-labeller (no affinity, no regions, no validators, softmax-all, background-only).
Every stage runs through the same engine functions the CLI uses.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..metrics import IoUAccumulator, mask_iou, spearman


def _gt(gt_root: Path, rec: dict, tag: str) -> np.ndarray | None:
    from PIL import Image

    p = gt_root / rec["image_path"].stem / f"{tag}.png"
    if not p.exists():
        return None
    return np.asarray(Image.open(p)) > 127


def score_pseudomasks(run_dir, records: list[dict], gt_root) -> dict:
    """Pseudo-masks vs GT on the split they were made for: dataset-level mIoU of the accepted
    masks (missing = empty), all masks, and how well the validators separate good from bad."""
    import pandas as pd
    from PIL import Image

    run_dir, gt_root = Path(run_dir), Path(gt_root)
    df = pd.read_parquet(run_dir / "index.parquet")
    by_id = {r["post_id"]: r for r in records}
    acc_only, every = IoUAccumulator(), IoUAccumulator()
    ious, accepted = [], []
    score_cols = ["quality", "consistency_iou", "deletion_drop", "insertion_keep", "cam_score", "margin", "prob"]
    scores = {c: [] for c in score_cols}
    for row in df.itertuples(index=False):
        rec = by_id.get(int(row.post_id))
        if rec is None:
            continue
        gt = _gt(gt_root, rec, row.tag)
        if gt is None:
            continue
        m = np.asarray(Image.open(run_dir / row.mask_path)) > 127
        iou = mask_iou(m, gt)
        every.add(row.tag, m, gt)
        acc_only.add(row.tag, m if row.accepted else np.zeros_like(m), gt)
        ious.append(iou)
        accepted.append(bool(row.accepted))
        for c in score_cols:
            v = getattr(row, c)
            scores[c].append(float(v) if v == v and v is not None else 0.0)
    ious_a = np.array(ious)
    acc_a = np.array(accepted, bool)
    rho = {c: spearman(v, ious) for c, v in scores.items()}
    best = max(rho, key=lambda c: -1 if rho[c] != rho[c] else rho[c]) if rho else None
    acc_mean = float(ious_a[acc_a].mean()) if acc_a.any() else float("nan")
    rej_mean = float(ious_a[~acc_a].mean()) if (~acc_a).any() else float("nan")
    return {"miou_accepted": acc_only.miou(), "miou_all": every.miou(), "per_tag_accepted": acc_only.per_tag(), "per_tag_all": every.per_tag(),
            "n_masks": len(ious), "n_accepted": int(acc_a.sum()),
            "mean_iou_accepted": acc_mean, "mean_iou_rejected": rej_mean,
            "accepted_over_rejected": acc_mean / rej_mean if rej_mean and rej_mean == rej_mean else float("nan"),
            "spearman": rho, "best_validator": best, "best_spearman": rho.get(best) if best else float("nan")}


def score_predictor(predictor, records: list[dict], gt_root, threshold: float = 0.5) -> dict:
    """Dataset-level mIoU of a Predictor on a split's images and their own tags."""
    gt_root = Path(gt_root)
    acc = IoUAccumulator()
    for rec in records:
        tags = list(dict.fromkeys(rec["tags"]))
        probs = predictor.probabilities(rec["image_path"], tags)  # at the image's own size
        for tag, p in zip(tags, probs):
            gt = _gt(gt_root, rec, tag)
            if gt is not None:
                acc.add(tag, p >= threshold, gt)
    return acc.summary()


def run_quality_bench(work_dir, n_train: int = 600, n_test: int = 200, size=(128, 192), align_epochs: int = 14,
                      seg_epochs: int = 10, model: str = "gaudi-lite0", image_size: int = 128, seed: int = 0,
                      ablations: bool = True, ablation_n: int | None = 150, device: str = "cpu", batch_size: int = 32,
                      align_ckpt=None, dataset=None, train_limit: int | None = None, log=print) -> dict:
    """Run everything in `work_dir`; returns the results (also written to work_dir/bench.json).
    `dataset`: a folder in ccp-dev's layout (`bench.datasets`), else SynthBooru (`n_train`,
    `n_test`, `size`); `train_limit` samples that many of its train images. `align_ckpt` reuses a
    Stage A checkpoint trained on the same train split (skips Stage A); ablations run on the first
    `ablation_n` train posts that have masks (None: all), against the default on the same posts."""
    from ..infer import Predictor
    from ..pseudo.run import run_pseudolabels
    from ..train.data import read_manifest
    from ..train.segmenter import train_segmenter
    from .datasets import folder_data, synth_data

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    rows: list[dict] = []

    def stage(name):
        class _T:
            def __enter__(self):
                self.t = time.time()
                log(f"[bench] {name} ...")

            def __exit__(self, *exc):
                times[name] = round(time.time() - self.t, 1)
                log(f"[bench] {name}: {times[name]} s")
        return _T()

    with stage("data"):
        data = folder_data(Path(dataset), work, train_limit, seed) if dataset else \
            synth_data(work, n_train, n_test, size, seed)
    train_recs, test_recs = read_manifest(data.train_manifest), read_manifest(data.test_manifest)
    desc, train_gt = data.descriptions, data.train_gt
    log(f"[bench] {data.name}: {len(train_recs)} train images, {len(test_recs)} test images")
    if align_ckpt is None:
        with stage("train-align"):
            align_ckpt = _train_align(work, data.train_manifest, desc, model, image_size, align_epochs, batch_size,
                                      device, seed)
    with stage("cam-only (test)"):
        cam = score_predictor(Predictor(align_ckpt, device=device), test_recs, data.test_gt)
    rows.append({"row": "CAM only (affinity + regions)", "miou": cam["miou"], "time_s": times["cam-only (test)"]})
    seg_ckpt, pseudo_scores, seg_scores = None, {}, {}
    for rnd in (1, 2):  # round r: pseudo-masks v<r> (round 2 read off segmenter s1) -> segmenter s<r>
        with stage(f"pseudo v{rnd}"):
            run_pseudolabels(data.train_manifest, desc, align_ckpt, work / f"pseudomasks_v{rnd}",
                             segmenter_ckpt=seg_ckpt, device=device)
        pv = score_pseudomasks(work / f"pseudomasks_v{rnd}", train_recs, train_gt) if train_gt else None
        rows.append({"row": f"pseudo v{rnd} (accepted, train masks)", "time_s": times[f"pseudo v{rnd}"],
                     "miou": pv["miou_accepted"] if pv else float("nan"),
                     "note": f"all masks {pv['miou_all']:.3f}; accepted {pv['n_accepted']}/{pv['n_masks']}"
                     if pv else "no train masks to score against"})
        pseudo_scores[rnd] = pv
        with stage(f"segmenter s{rnd}"):
            # s2 goes on training s1 on the round-2 masks (self-training)
            seg = train_segmenter(data.train_manifest, desc, work / f"pseudomasks_v{rnd}", work / f"seg_s{rnd}",
                                  seg_epochs, init_from=seg_ckpt or align_ckpt, device=device,
                                  batch_size=batch_size, seed=seed)
        score = score_predictor(Predictor(align_ckpt, seg["checkpoint"], device=device), test_recs, data.test_gt)
        rows.append({"row": f"segmenter s{rnd}", "miou": score["miou"], "time_s": times[f"segmenter s{rnd}"]})
        seg_scores[rnd] = score
        seg_ckpt = seg["checkpoint"]
    orc_score = None
    if data.oracle_manifest is not None:
        # the same budget in steps: fewer images with masks than tagged ones get more epochs
        n_orc = len(read_manifest(data.oracle_manifest))
        orc_epochs = max(seg_epochs, int(round(seg_epochs * len(train_recs) / max(n_orc, 1))))
        with stage("oracle"):
            orc = train_segmenter(data.oracle_manifest, desc, None, work / "seg_oracle", orc_epochs,
                                  init_from=align_ckpt, gt_masks=train_gt, device=device, batch_size=batch_size,
                                  seed=seed)
        orc_score = score_predictor(Predictor(align_ckpt, orc["checkpoint"], device=device), test_recs, data.test_gt)
        rows.append({"row": "oracle (train masks, same segmenter, same steps)", "miou": orc_score["miou"],
                     "time_s": times["oracle"], "note": f"{n_orc} images x {orc_epochs} epochs"})
    ablation_rows = []
    if ablations and train_gt is not None:
        ablation_rows = run_ablations(work, data.train_manifest, desc, align_ckpt, train_recs, train_gt,
                                      ablation_n, device, stage, times)
    v1, s1_score, s2_score = pseudo_scores[1], seg_scores[1], seg_scores[2]
    final = s2_score["miou"]
    orc_miou = orc_score["miou"] if orc_score else float("nan")
    vkeys = ("mean_iou_accepted", "mean_iou_rejected", "accepted_over_rejected", "spearman", "best_validator",
             "best_spearman")
    result = {"dataset": data.name, "rows": rows, "ablations": ablation_rows, "times": times,
              "validators": {k: v1[k] for k in vkeys} if v1 else None,
              "validators_v2": {k: pseudo_scores[2][k] for k in vkeys} if pseudo_scores[2] else None,
              "final_over_oracle": final / orc_miou if orc_miou else float("nan"),
              "round2_minus_round1": s2_score["miou"] - s1_score["miou"],
              "per_tag": {"cam": cam["per_tag"], "v1": v1["per_tag_accepted"] if v1 else {},
                          "s1": s1_score["per_tag"], "s2": s2_score["per_tag"],
                          "oracle": orc_score["per_tag"] if orc_score else {}},
              "config": {"dataset": str(dataset) if dataset else None, "train_limit": train_limit,
                         "ablation_n": ablation_n, "n_train": len(train_recs), "n_test": len(test_recs),
                         "size": list(size) if not dataset else None, "align_epochs": align_epochs,
                         "seg_epochs": seg_epochs, "model": model, "image_size": image_size, "seed": seed,
                         "align_ckpt": str(align_ckpt)},
              "total_time_s": round(sum(times.values()), 1)}
    (work / "bench.json").write_text(json.dumps(result, indent=1, default=float))
    log(markdown_table(result))
    return result


def ablation_variants() -> dict:
    """The pseudo-labeller's rules, each switched off (or swapped) alone: name -> PseudoConfig."""
    from ..pseudo.cam import CamConfig
    from ..pseudo.config import PseudoConfig
    from ..pseudo.validators import ValidatorConfig

    return {
        "default (same posts)": PseudoConfig(),
        "no affinity": PseudoConfig(affinity=False),
        "no regions": PseudoConfig(regions=None),
        "SLIC regions": PseudoConfig(regions="slic"),
        "felzenszwalb regions at infer's finer scale": PseudoConfig(region_coarse=1.0),
        "no max-normalisation": PseudoConfig(max_norm=None),
        "no fine zoom for small things": PseudoConfig(fine_zoom=None),
        "zoomed parts keep the zoom in a big whole": PseudoConfig(part_inside=None),
        "two tags that imply each other left alone": PseudoConfig(mutual=None),
        "things nested in stuff joined to it, not cut out": PseudoConfig(cut_occluders=False),
        "no colour reassignment of regions two stuff tags claim": PseudoConfig(stuff_colours=False),
        "a thing in a thing nests only when >= 0.5 inside": PseudoConfig(thing_nest_inside=0.5),
        "no validators": PseudoConfig(validators=ValidatorConfig(enabled=False)),
        "absolute validator thresholds": PseudoConfig(validators=ValidatorConfig(policy="absolute")),
        "softmax over all present tags": PseudoConfig(cam=CamConfig(mode="all")),
        "background-only softmax": PseudoConfig(cam=CamConfig(mode="background")),
    }


def run_ablations(work: Path, manifest, desc, align_ckpt, records: list[dict], gt_root: Path,
                  ablation_n: int | None, device: str, stage, times: dict, variants: dict | None = None) -> list[dict]:
    """Pseudo v1 of each variant on the first `ablation_n` train posts that have masks."""
    import pandas as pd

    from ..pseudo.run import run_pseudolabels
    from ..train.data import read_manifest

    with_gt = [r["post_id"] for r in records if (Path(gt_root) / r["image_path"].stem).is_dir()]
    keep = set(with_gt[:ablation_n] if ablation_n else with_gt)
    df = pd.read_csv(manifest)
    df = df[df["post_id"].isin(keep)]
    abl_manifest = Path(manifest).with_name(f"manifest_ablation{len(df)}.csv")
    df.to_csv(abl_manifest, index=False)
    abl_recs = read_manifest(abl_manifest)
    out = []
    for name, cfg in (variants or ablation_variants()).items():
        d = work / ("ablation_" + name.split(" (")[0].replace(" ", "_"))
        with stage(f"ablation {name}"):
            run_pseudolabels(abl_manifest, desc, align_ckpt, d, device=device, config=cfg)
        sc = score_pseudomasks(d, abl_recs, gt_root)
        out.append({"row": f"pseudo v1, {name}", "miou": sc["miou_accepted"], "miou_all": sc["miou_all"],
                    "accepted": f"{sc['n_accepted']}/{sc['n_masks']}", "time_s": times[f"ablation {name}"],
                    "acc_over_rej": sc["accepted_over_rejected"], "best_validator": sc["best_validator"],
                    "best_spearman": sc["best_spearman"]})
    return out


def _train_align(work: Path, manifest, desc, model, image_size, epochs, batch_size, device, seed) -> Path:
    """Stage A through the models engineer's entry point (the same one `gaudi train-align` uses)."""
    from ..train import align as stage_a

    out = work / "align_s1"
    stage_a.train_align(manifest, desc, out, model_name=model, epochs=epochs, batch_size=batch_size,
                        image_size=image_size, device=device, seed=seed)
    return out / "checkpoints" / "model.pt"


def markdown_table(result: dict) -> str:
    lines = [f"dataset: {result.get('dataset', 'SynthBooru')}", "", "| row | mIoU | time (s) | note |", "|---|---|---|---|"]
    for r in result["rows"] + result.get("ablations", []):
        note = r.get("note") or (f"all {r['miou_all']:.3f}; accepted {r['accepted']}; "
                                 f"acc/rej x{r['acc_over_rej']:.2f}" if "miou_all" in r else "")
        lines.append(f"| {r['row']} | {r['miou']:.3f} | {r['time_s']} | {note} |")
    lines.append("")
    if result.get("ablations"):
        lines.append("ablations: pseudo-masks v1 on the first train posts that have masks; mIoU of accepted masks, "
                     "'all' = every mask")
    for key, label in (("validators", "v1"), ("validators_v2", "v2")):
        v = result.get(key)
        if v:
            rho = ", ".join(f"{k} {x:.2f}" for k, x in v["spearman"].items())
            lines.append(f"validators {label}: mean IoU accepted {v['mean_iou_accepted']:.3f} vs rejected "
                         f"{v['mean_iou_rejected']:.3f} (x{v['accepted_over_rejected']:.2f}); best score "
                         f"{v['best_validator']} Spearman {v['best_spearman']:.3f} ({rho})")
    lines.append(f"final weak / oracle = {result['final_over_oracle']:.3f}; round 2 - round 1 = "
                 f"{result['round2_minus_round1']:+.3f}; total {result['total_time_s']} s")
    pt = result.get("per_tag") or {}
    cols = [c for c in ("cam", "v1", "s1", "s2", "oracle") if pt.get(c)]
    tags = sorted({t for c in cols for t in pt[c]})
    if tags:
        lines += ["", "| tag | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for t in tags:
            lines.append(f"| {t} | " + " | ".join(f"{pt[c][t]:.3f}" if t in pt[c] else "" for c in cols) + " |")
    return "\n".join(lines)
