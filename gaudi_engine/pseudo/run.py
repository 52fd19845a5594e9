"""`gaudi pseudolabels`: the run driver. It reads the inputs, wires the stages and writes the run:
text-CAM -> affinity -> regions -> validators (`labeler`) for every post's tags, after the
run-level measurements (`calibration`) that make the run's structure (`structure`).
Round 2 (`segmenter_ckpt`, self-training as in MaskCLIP+): the round-1 segmenter's probabilities
replace the CAM -> affinity part; regions (at `infer`'s scale) and validators are the same, and
round 1's `structure.json` is copied from the run the segmenter was trained on.

Every pixel step runs on the post's working image (`imaging`: decoded once, aspect kept, short side
`Preprocess.working_side`, cached beside the manifest); the masks and soft maps are upsampled to
the image's own size only when written.

Output (DESIGN §6), in `out/`: the masks, scores, parts files and index (`output`), and
  structure.json      what the run learned about how tags relate (`structure`)
  calibration.json    per-tag quality floors (relative validator policy)
  config.json         the run's inputs and its whole PseudoConfig (`pseudo`): `--config` reads it back

Shards split the posts (sorted by post_id) into contiguous chunks; the run-level measurements
come from the whole manifest, so the shards' rows merge to exactly the unsharded index. A rerun
skips every post already in any part.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import GaudiError
from ..fileio import atomic_write_text
from ..imaging import ImageError, cache_for
from ..models.tag_texts import TagTexts
from ..progress import Progress
from .calibration import calibrate, calibrate_masks
from .cam import mutual_pairs, nest_candidates
from .config import PseudoConfig
from .labeler import PseudoLabeler
from .objectness import ubiquitous_tags
from .output import done_posts, merge_index, open_part, parse_shard, part_line, shard_records, write_post
from .structure import apply_structure, inherit_structure, run_structure

log = logging.getLogger(__name__)


def shared_json(path: Path, compute) -> dict:
    """A run-level decision every shard and every rerun must share (validator floors): read it when
    a shard or an earlier run already wrote it, else compute it and write it atomically."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    atomic_write_text(path, json.dumps(value, indent=1))
    return value


def write_run_config(out: Path, cfg: PseudoConfig, manifest, align_ckpt, segmenter_ckpt=None,
                     round_: int | None = None, structure: dict | None = None,
                     ubiquitous: set[str] = frozenset()) -> Path:
    """The run's `config.json`: its inputs and whole PseudoConfig (`pseudo`), which shard workers
    and reruns read back (`--config`). Shards write it concurrently: each replaces it whole."""
    run_config = {"align_ckpt": str(align_ckpt), "segmenter_ckpt": str(segmenter_ckpt) if segmenter_ckpt else None,
                  "manifest": str(manifest), "round": round_ if round_ is not None else (2 if segmenter_ckpt else 1),
                  "pseudo": cfg.to_dict(), "ubiquitous_tags": sorted(ubiquitous)}
    if structure is not None:  # as before structure.json held them
        run_config.update(mutual_pairs=[[a, b, round(g, 3)] for a, b, g in structure["mutual_pairs"]],
                          parts=structure["parts"], occluders=structure["occluders"])
    return atomic_write_text(Path(out) / "config.json", json.dumps(run_config, indent=1, default=str))


def run_pseudolabels(manifest, tag_desc, align_ckpt, out, segmenter_ckpt=None, shard: str | tuple | None = None,
                     device: str = "cpu", config: PseudoConfig | None = None, limit: int | None = None,
                     image_cache: str | None = None, calibration_only: bool = False) -> dict:
    """Pseudo-label every (post, tag) of the manifest (this shard's part). Returns a summary.
    `calibration_only`: measure the run's structure and floors and write only the calibration
    posts of this shard (already labelled while calibrating), so that worker processes started
    next read them instead of each measuring them again (`gaudi pseudolabels --workers`)."""
    from ..models.checkpoint import load_align
    from ..train.data import load_tag_descriptions, read_manifest

    cfg = config or PseudoConfig()
    shard_t = shard if isinstance(shard, tuple) else parse_shard(shard)
    records = read_manifest(manifest)
    if not records:
        raise GaudiError(f"manifest {manifest} has no posts")
    descs = load_tag_descriptions(tag_desc) if tag_desc else {}
    with Progress("load-models", total=2 if segmenter_ckpt else 1, unit="model", prelude=True) as bar:
        bundle = load_align(align_ckpt, device)
        model = bundle.model.eval()
        texts = TagTexts(model, bundle.vocab, bundle.text_emb, {**(bundle.descriptions or {}), **descs})
        bar.update(1)
        segmenter = None
        round_ = 1
        if segmenter_ckpt:
            from ..models.segmenter import load_segmenter

            seg_bundle = load_segmenter(segmenter_ckpt, device)
            segmenter = seg_bundle.model
            round_ = 2
            bar.update(1)
    out = Path(out)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    if segmenter is not None and cfg.inherit_structure:
        inherit_structure(seg_bundle.config, out)
    labeler = PseudoLabeler(model, bundle.preprocess, texts, cfg, segmenter=segmenter, device=device)
    labeler.cache = cache_for(manifest, image_cache)
    candidates = nest_candidates([r["tags"] for r in records]) if cfg.cam.mode == "nesting" else set()
    labeler.mutual = mutual_pairs([r["tags"] for r in records]) if cfg.mutual else {}
    labeler.ubiquitous = ubiquitous_tags([r["tags"] for r in records], cfg.ubiquitous_share)
    structure = run_structure(out, lambda: calibrate_masks(labeler, records, cfg, candidates), cfg, labeler.mutual)
    apply_structure(labeler, structure)
    mine = shard_records(records, shard_t)
    if limit is not None:
        mine = mine[:limit]
    done = done_posts(out)
    todo = [r for r in mine if r["post_id"] not in done]
    calibrated: dict[int, dict] = {}  # this shard's posts labelled while calibrating
    v = cfg.validators
    if v.enabled and v.policy == "relative" and v.reject_quantile > 0:
        def floors() -> dict:
            found, kept = calibrate(labeler, records, cfg, keep={r["post_id"] for r in todo})
            calibrated.update(kept)
            return found

        labeler.floors = shared_json(out / "calibration.json", floors)
    write_run_config(out, cfg, manifest, align_ckpt, segmenter_ckpt, round_, structure, labeler.ubiquitous)
    part = out / "parts" / f"shard-{shard_t[0]}-of-{shard_t[1]}.jsonl"
    if calibration_only:  # the posts labelled while calibrating; the workers do the rest
        todo = [r for r in todo if r["post_id"] in calibrated]
        part = out / "parts" / f"calibration-{shard_t[0]}-of-{shard_t[1]}.jsonl"
    n_masks = n_acc = skipped = 0
    with Progress("pseudolabels", total=len(todo), unit="post") as bar, open_part(part) as fh:
        for rec in todo:
            tags = [t for t in dict.fromkeys(rec["tags"]) if t]
            try:
                image = labeler.load(rec)
            except ImageError as exc:
                log.warning("skipping post %s: %s", rec["post_id"], exc)
                bar.log(f"skipping post {rec['post_id']}: {exc}")
                skipped += 1
                bar.update(1)
                continue
            if rec["post_id"] in calibrated:
                recs = labeler.apply_floors(calibrated.pop(rec["post_id"]))
            else:
                recs = labeler.label_image(image, tags) if tags else {}
            rows = write_post(out, rec["post_id"], recs, image.size, round_) if tags else []  # own size
            fh.write(part_line(rec["post_id"], rows))
            fh.flush()
            n_masks += len(rows)
            n_acc += sum(r["accepted"] for r in rows)
            bar.update(1, masks=n_masks, accepted=n_acc)
    n_rows = merge_index(out)
    return {"out": str(out), "posts": len(mine), "processed": len(todo) - skipped, "skipped_done": len(mine) - len(todo),
            "skipped_unreadable": skipped, "masks": n_masks, "accepted": n_acc, "index_rows": n_rows,
            "nesting": sorted(labeler.nests), "round": round_, "shard": list(shard_t)}
