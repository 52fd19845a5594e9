"""Model speed (DESIGN §9, issue 14 item 6): what a user waits for, on pictures of the sizes users
have. The machine may be shared and noisy, so every ratio is taken inside ONE run of one process, its
two sides interleaved where they are repeated, from the best (shortest) of the repeats: load from
other work only ever adds time, so the best is the least disturbed estimate (the medians are in
bench.json too). Absolute times are context, reported with the load average at the start and end
of each part and the thread count.

- `infer_cold`: `gaudi infer --image X --tags ... --align-ckpt A --segmenter-ckpt S --out o.json`
  as a fresh subprocess (Python start, imports, checkpoint load, decode, predict, writing), on a
  2048x3072 JPEG, 10 tags; the same runs' import time read off PYTHONPROFILEIMPORTTIME.
- `infer`: a warm `Predictor.predict` (DESIGN JSON with full-size RLE masks), the image passed as
  a path to a JPEG file (its decode included), for 1 and 10 tags at 512x768 and 2048x3072.
  Targets: 10 tags at 2048x3072 <= 1.5 s and <= 1.5x the same at 512x768; 10 tags <= 1.3x 1 tag.
- `infer_batch`: seconds per image of `infer_batch` (JSON + overlay PNG per image) on a folder of
  192 px pictures and on one of 3072 px pictures, 10 tags each. Target: 3072 <= 3x 192.
- `pseudo`: images/s of `run_pseudolabels` end to end (checkpoint load, calibration on the first
  posts, decode with a cold working-image cache, labelling, writing the full-size PNGs) on a
  handful of 192 px and of 2048x3072 pictures.
- `train`: Stage A with 2048 px originals on disk. The dataset is built once to fill the
  working-image cache, then a second `train_align` run reads it warm; its loop step (data +
  forward + backward + optimizer, from metrics.jsonl) and that step plus its share of the warm
  dataset build (one epoch: batch_size x build seconds per image) against the bare
  forward+backward of the same model and loss on one batch already in memory, timed just before
  and just after the run. Target <= 1.3x.

Test pictures are SynthBooru scenes rendered at <= 192 px and upscaled (bilinear) to the size
wanted, saved as JPEG (quality 90; Danbooru originals are mostly JPEG) with NAME.txt sidecars and
a manifest. The checkpoints are a tiny Stage A (`train_align`, 2 steps) and a segmenter
(`train_segmenter` on the ground truth, a few steps): speed does not depend on their quality.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

TEN_TAGS_NOTE = "10 of SynthBooru's 18 tags"
JPEG_QUALITY = 90


# --- small helpers ----------------------------------------------------------------------------

def load_avg() -> list[float]:
    """The 1, 5 and 15 minute load averages (empty where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return []


def threads() -> int:
    import torch

    return torch.get_num_threads()


def _times(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each fn over `repeats` rounds; every round runs all of them (the order rotating),
    so a burst of load on the machine falls on all sides of a ratio alike."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            t = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t)
    return times


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def _row(what: str, value: float, unit: str, target: float | None = None, note: str = "") -> dict[str, Any]:
    """One line of the table: a time (unit "s"), a rate ("img/s") or a ratio ("x"), with its
    target (value <= target passes) where DESIGN sets one."""
    nd = 2 if unit == "x" else 3
    r: dict[str, Any] = {"what": what, "value": round(float(value), nd), "unit": unit}
    if target is not None:
        r["target"] = target
        r["ok"] = bool(value <= target)
    if note:
        r["note"] = note
    return r


def _part(fn: Callable[[], tuple[dict, list]]) -> dict[str, Any]:
    """Run one part: its measurements, its table rows, load average and threads around it."""
    la0, t0 = load_avg(), time.perf_counter()
    with _quiet_logs():
        values, rows = fn()
    return {"threads": threads(), "load_avg_start": la0, "load_avg_end": load_avg(),
            "seconds": round(time.perf_counter() - t0, 1), **values, "rows": rows}


@contextlib.contextmanager
def _quiet_logs():
    """The engine's per-image warnings off while a part runs (they would bury the table)."""
    log = logging.getLogger("gaudi_engine")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _size_str(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


# --- test pictures and checkpoints ---------------------------------------------------------------

def make_pictures(folder: Path, n: int, size: tuple[int, int] | None = None, long_side: int | None = None,
                  seed: int = 0, fmt: str = "JPEG", base_side: int = 192) -> dict[str, Any]:
    """`n` SynthBooru scenes rendered with their long side <= `base_side`, upscaled to `size`
    (w, h) or to `long_side` (the scene's own aspect), saved as JPEG (or PNG) with NAME.txt tags;
    manifest.csv and tag_descriptions.json beside the images folder."""
    import numpy as np
    from PIL import Image

    from ..imaging import fit_size
    from ..synth import TAG_DESCRIPTIONS, render_scene

    folder = Path(folder)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    ext = ".jpg" if fmt.upper() == "JPEG" else ".png"
    rows, files = [], []
    for i in range(n):
        s = seed * 10_000 + i
        if size is not None:
            w, h = int(size[0]), int(size[1])
        else:
            rng = np.random.default_rng(s ^ 0x5EED)
            w, h = fit_size(*(int(v) for v in rng.integers(128, 193, size=2)), int(long_side))
        img, tags, _ = render_scene(s, fit_size(w, h, min(base_side, max(w, h))))
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        name = f"{i:06d}"
        f = images / f"{name}{ext}"
        if ext == ".jpg":
            img.save(f, format="JPEG", quality=JPEG_QUALITY)
        else:
            img.save(f, format="PNG", compress_level=1)
        f.with_suffix(".txt").write_text(", ".join(tags) + "\n", encoding="utf-8")
        files.append(f)
        rows.append({"post_id": i + 1, "image_path": f"images/{f.name}", "tags": " ".join(tags),
                     "md5": hashlib.md5(f.read_bytes()).hexdigest(), "rating": "g", "width": w, "height": h})
    (folder / "tag_descriptions.json").write_text(json.dumps(TAG_DESCRIPTIONS, indent=1), encoding="utf-8")
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return {"dir": folder, "images": images, "files": files, "manifest": folder / "manifest.csv",
            "tag_desc": folder / "tag_descriptions.json", "format": fmt.upper()}


class SpeedKit:
    """A work folder shared by the model parts: the tiny checkpoints (trained on first use) and
    the 10 tags asked for."""

    def __init__(self, root: Path, model_name: str = "gaudi-lite0", image_size: int | None = None, seed: int = 0):
        from ..synth import SYNTH_TAGS

        self.root = Path(root)
        self.model_name, self.image_size, self.seed = model_name, image_size, seed
        self.tags = list(SYNTH_TAGS)[:10]
        self._ckpts: tuple[Path, Path] | None = None
        self.setup_seconds: float | None = None

    def checkpoints(self) -> tuple[Path, Path]:
        """(align, segmenter) checkpoint paths, as the trainers' summaries name them."""
        if self._ckpts is None:
            from ..synth import generate
            from ..train.align import train_align
            from ..train.segmenter import train_segmenter

            t = time.perf_counter()
            data = self.root / "fit"
            info = generate(data, n=16, seed=self.seed, size=(128, 192))
            a = train_align(info["manifest"], info["tag_descriptions"], self.root / "align",
                            model_name=self.model_name, image_size=self.image_size, epochs=1, batch_size=4,
                            max_steps=2, device="cpu", log_every=1)
            s = train_segmenter(info["manifest"], info["tag_descriptions"], None, self.root / "seg", 1,
                                init_from=a["checkpoint"], gt_masks=data / "gt", batch_size=4, max_steps=2,
                                device="cpu", log_every=1)
            self._ckpts = (Path(a["checkpoint"]), Path(s["checkpoint"]))
            self.setup_seconds = round(time.perf_counter() - t, 1)
        return self._ckpts

    def predictor(self):
        from ..infer import Predictor

        align, seg = self.checkpoints()
        return Predictor(align, seg, device="cpu")


# --- (a) a cold `gaudi infer` ------------------------------------------------------------------

def gaudi_command() -> list[str]:
    """The `gaudi` console script of this environment, else `python -m gaudi_engine`."""
    script = Path(sys.executable).with_name("gaudi")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gaudi_engine"]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([repo, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _import_seconds(stderr: str) -> float:
    """Seconds spent importing, from a child's PYTHONPROFILEIMPORTTIME report (the cumulative
    times of its top-level imports)."""
    total = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        if not parts[2].startswith("  "):  # "| name" is top level, "|   name" nested
            total += int(parts[1])
    return total / 1e6


def _run_timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env={**_child_env(), **(env or {})}, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return dt, proc.stderr


def bench_infer_cold(kit: SpeedKit, size: tuple[int, int] = (2048, 3072), repeats: int = 3) -> dict[str, Any]:
    """Wall time of a fresh `gaudi infer` process (median of `repeats`: a first run that still
    fills the OS file cache is the outlier the median drops); with PYTHONPROFILEIMPORTTIME=1
    (negligible overhead) the import time is read off the same runs."""

    def run() -> tuple[dict, list]:
        align, seg = kit.checkpoints()
        pic = make_pictures(kit.root / "cold", 1, size=size, seed=kit.seed + 1)["files"][0]
        out = kit.root / "cold" / "out"
        out.mkdir(exist_ok=True)
        cmd = gaudi_command() + ["infer", "--image", str(pic), "--tags", " ".join(kit.tags),
                                 "--align-ckpt", str(align), "--segmenter-ckpt", str(seg), "--out", ""]
        walls, imports = [], []
        for i in range(repeats):
            cmd[-1] = str(out / f"o{i}.json")
            wall, err = _run_timed(cmd, kit.root, {"PYTHONPROFILEIMPORTTIME": "1"})
            walls.append(wall)
            imports.append(_import_seconds(err))
        res = json.loads(Path(cmd[-1]).read_text())
        assert res["width"] == size[0] and res["height"] == size[1] and len(res["tags"]) == len(kit.tags)
        best = min(range(repeats), key=walls.__getitem__)
        t_inf, t_imp = walls[best], imports[best]
        values = {"image": f"{_size_str(size)} JPEG", "tags": kit.tags,
                  "command": "gaudi infer --image X.jpg --tags '<10 tags>' --align-ckpt A --segmenter-ckpt S "
                             "--out o.json", "runs_as": " ".join(gaudi_command()), "repeats": repeats,
                  "cold_infer_s": round(t_inf, 3), "imports_s": round(t_imp, 3), "rest_s": round(t_inf - t_imp, 3),
                  "cold_infer_median_s": round(_med(walls), 3), "cold_infer_runs_s": [round(x, 3) for x in walls],
                  "imports_runs_s": [round(x, 3) for x in imports]}
        rows = [_row(f"cold `gaudi infer` {_size_str(size)} JPEG, 10 tags (wall, best of {repeats})", t_inf, "s"),
                _row("  of which: imports (PYTHONPROFILEIMPORTTIME)", t_imp, "s"),
                _row("  of which: the rest (python start, load, decode, predict, write)", t_inf - t_imp, "s")]
        return values, rows

    return _part(run)


# --- (b) warm predict --------------------------------------------------------------------------

def bench_infer(kit: SpeedKit, mid: tuple[int, int] = (512, 768), big: tuple[int, int] = (2048, 3072),
                repeats: int = 4) -> dict[str, Any]:
    def run() -> tuple[dict, list]:
        from ..imaging import load_working

        t = time.perf_counter()
        pred = kit.predictor()
        t_load = time.perf_counter() - t
        pics = {}
        for name, size in (("mid", mid), ("big", big)):
            pics[name] = make_pictures(kit.root / f"warm_{name}", 1, size=size, seed=kit.seed + 2)["files"][0]
        one, ten = kit.tags[:1], kit.tags
        fns = {f"{name}_{k}": (lambda p=p, tags=tags: pred.predict(p, tags))
               for name, p in pics.items() for k, tags in (("1", one), ("10", ten))}
        fns.update({f"{name}_decode": (lambda p=p: load_working(p, pred.preprocess)) for name, p in pics.items()})
        pred.predict(pics["big"], ten)  # one-off costs (thread pools, lazy imports) before timing
        times = _interleaved(fns, repeats=repeats, warmup=0)
        m = {k: min(v) for k, v in times.items()}
        r_tags_mid, r_tags_big = m["mid_10"] / m["mid_1"], m["big_10"] / m["big_1"]
        r_size = m["big_10"] / m["mid_10"]
        ms, bs = _size_str(mid), _size_str(big)
        values = {"image_passed_as": "path to a JPEG file (decode to the working image included)",
                  "sizes": {"mid": ms, "big": bs}, "tags": kit.tags, "repeats": repeats, "mode": pred.mode,
                  "image_size": pred.preprocess.image_size, "working_side": pred.preprocess.working_side,
                  "checkpoint_load_s": round(t_load, 3),
                  **{f"predict_{k}_s": round(v, 4) for k, v in m.items() if not k.endswith("decode")},
                  **{f"predict_{k}_median_s": round(_med(v), 4) for k, v in times.items() if not k.endswith("decode")},
                  "decode_mid_s": round(m["mid_decode"], 4), "decode_big_s": round(m["big_decode"], 4),
                  "ratio_10_vs_1_tag_mid": round(r_tags_mid, 3), "ratio_10_vs_1_tag_big": round(r_tags_big, 3),
                  "ratio_big_vs_mid_10_tags": round(r_size, 3),
                  "targets": {"predict_10_tags_big_s": 1.5, "ratio_big_vs_mid_10_tags": 1.5, "ratio_10_vs_1_tag": 1.3}}
        rows = [_row("Predictor(...) checkpoint load (once)", t_load, "s"),
                _row(f"warm predict 1 tag   {ms} (path)", m["mid_1"], "s"),
                _row(f"warm predict 10 tags {ms} (path)", m["mid_10"], "s"),
                _row(f"warm predict 1 tag   {bs} (path)", m["big_1"], "s"),
                _row(f"warm predict 10 tags {bs} (path)", m["big_10"], "s", 1.5),
                _row(f"  of which: decode {bs} JPEG -> working image", m["big_decode"], "s"),
                _row(f"10 tags / 1 tag at {ms}", r_tags_mid, "x", 1.3),
                _row(f"10 tags / 1 tag at {bs}", r_tags_big, "x", 1.3),
                _row(f"{bs} / {ms}, 10 tags", r_size, "x", 1.5)]
        return values, rows

    return _part(run)


# --- (c) batch inference -----------------------------------------------------------------------

def bench_infer_batch(kit: SpeedKit, small: tuple[int, int] = (128, 192), big: tuple[int, int] = (2048, 3072),
                      n_images: int = 4, rounds: int = 2) -> dict[str, Any]:
    def run() -> tuple[dict, list]:
        from ..infer import infer_batch

        pred = kit.predictor()
        dirs = {name: make_pictures(kit.root / f"batch_{name}", n_images, size=size, seed=kit.seed + 3)["images"]
                for name, size in (("small", small), ("big", big))}
        k = [0]

        def batch(name: str) -> None:
            k[0] += 1
            out = kit.root / f"batch_out_{k[0]}"
            s = infer_batch(pred, dirs[name], out, tags=kit.tags)
            assert s["images"] == n_images, s
            shutil.rmtree(out, ignore_errors=True)

        pred.predict(next(iter(sorted(dirs["small"].glob("*.jpg")))), kit.tags)  # warm the model
        times = _interleaved({"small": lambda: batch("small"), "big": lambda: batch("big")},
                             repeats=rounds, warmup=0)
        per = {n: min(v) / n_images for n, v in times.items()}
        ratio = per["big"] / per["small"]
        ss, bs = _size_str(small), _size_str(big)
        values = {"images_per_folder": n_images, "rounds": rounds, "format": "JPEG", "tags": kit.tags,
                  "writes": "NAME.json (full-size RLE) + NAME.png overlay (long side <= 1024)",
                  "sizes": {"small": ss, "big": bs}, "per_image_small_s": round(per["small"], 4),
                  "per_image_big_s": round(per["big"], 4), "ratio_big_vs_small": round(ratio, 3),
                  "per_image_runs_s": {n: [round(x / n_images, 4) for x in v] for n, v in times.items()},
                  "target_ratio": 3.0}
        rows = [_row(f"infer_batch per image {ss} (10 tags)", per["small"], "s"),
                _row(f"infer_batch per image {bs} (10 tags)", per["big"], "s"),
                _row(f"{bs} / {ss} per image", ratio, "x", 3.0)]
        return values, rows

    return _part(run)


# --- (d) pseudo-labels -------------------------------------------------------------------------

def bench_pseudo(kit: SpeedKit, small: tuple[int, int] = (128, 192), big: tuple[int, int] = (2048, 3072),
                 n_images: int = 8) -> dict[str, Any]:
    def run() -> tuple[dict, list]:
        from ..pseudo.run import run_pseudolabels

        align, _ = kit.checkpoints()
        per, summaries = {}, {}
        for name, size in (("small", small), ("big", big)):
            pics = make_pictures(kit.root / f"pseudo_{name}", n_images, size=size, seed=kit.seed + 4)
            t = time.perf_counter()
            s = run_pseudolabels(pics["manifest"], pics["tag_desc"], align, kit.root / f"pseudo_out_{name}")
            per[name] = (time.perf_counter() - t) / n_images
            summaries[name] = {"processed": s["processed"], "masks": s["masks"], "accepted": s["accepted"]}
        ss, bs = _size_str(small), _size_str(big)
        ratio = per["big"] / per["small"]
        values = {"images": n_images, "format": "JPEG", "sizes": {"small": ss, "big": bs},
                  "includes": "checkpoint load, calibration, decode (cold cache), labelling, writing PNGs + index",
                  "images_per_s_small": round(1 / per["small"], 3), "images_per_s_big": round(1 / per["big"], 3),
                  "per_image_small_s": round(per["small"], 3), "per_image_big_s": round(per["big"], 3),
                  "ratio_big_vs_small_per_image": round(ratio, 3), "runs": summaries}
        rows = [_row(f"pseudolabels {ss}: {n_images} images end to end", 1 / per["small"], "img/s"),
                _row(f"pseudolabels {bs}: {n_images} images end to end", 1 / per["big"], "img/s"),
                _row(f"{bs} / {ss} seconds per image", ratio, "x")]
        return values, rows

    return _part(run)


# --- (e) Stage A steps -------------------------------------------------------------------------

def bench_train_step(kit: SpeedKit, long_side: int = 2048, n_images: int = 32, batch_size: int = 16,
                     steps: int = 6) -> dict[str, Any]:
    """Best loop step of a `train_align` run on `long_side` px JPEG originals whose working
    images are already cached, vs the median bare forward+backward of the same model and loss on
    one batch in memory. The bare side is timed just before the run (a fresh model of the same
    architecture) and just after it (the run's trained weights); the best of all is the
    reference, as the best loop step is the loop's."""

    def run() -> tuple[dict, list]:
        import torch

        from ..imaging import Preprocess, cache_for
        from ..models.checkpoint import load_align
        from ..models.registry import create_align_model
        from ..train.align import DEFAULTS, _pretokenize, make_align_loss, train_align
        from ..train.data import TagImageDataset, build_vocab, load_tag_descriptions, read_manifest

        pics = make_pictures(kit.root / "train", n_images, long_side=long_side, seed=kit.seed + 5)
        manifest, tag_desc = pics["manifest"], pics["tag_desc"]
        records = read_manifest(manifest)
        vocab = build_vocab(records)
        descriptions = load_tag_descriptions(tag_desc)
        fresh = create_align_model(kit.model_name, image_size=kit.image_size)
        pre = fresh.preprocess_cfg
        t = time.perf_counter()
        TagImageDataset(records, vocab, pre, train=True, seed=0, cache=cache_for(manifest))  # fills the cache
        build_cold = time.perf_counter() - t
        t = time.perf_counter()
        dataset = TagImageDataset(records, vocab, pre, train=True, seed=0, cache=cache_for(manifest))
        build_warm = time.perf_counter() - t
        batch = torch.utils.data.default_collate([dataset[i] for i in range(min(batch_size, len(dataset)))])
        batch = {k: (v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.dim() == 4 else v)
                 for k, v in batch.items()}
        n_bare = max(3, steps // 2)

        def bare_time(model) -> float:
            """Median forward+backward of train_align's loss, on one batch already in memory."""
            model.train().to(memory_format=torch.channels_last)
            tokens, owner = _pretokenize(model, descriptions, vocab)
            loss_fn = make_align_loss(tokens, owner, len(vocab), bg_weight=DEFAULTS["bg_weight"],
                                      max_tags_per_step=DEFAULTS["max_tags_per_step"],
                                      rank_weight=DEFAULTS["rank_weight"], excl_weight=DEFAULTS["excl_weight"],
                                      excl_pool=DEFAULTS["excl_pool"])

            def fwd_bwd() -> None:
                model.zero_grad(set_to_none=True)
                loss, _ = loss_fn(model, batch)
                loss.backward()

            return _times(fwd_bwd, repeats=n_bare, warmup=1)

        bare_before = bare_time(fresh)
        del fresh
        epochs = -(-steps * batch_size // n_images) + 1
        out = kit.root / "train_run"
        t = time.perf_counter()
        summary = train_align(manifest, tag_desc, out, model_name=kit.model_name, image_size=kit.image_size,
                              epochs=epochs, batch_size=batch_size, max_steps=steps, device="cpu", log_every=1)
        run_wall = time.perf_counter() - t
        lines = (out / "metrics.jsonl").read_text().splitlines()
        rows_m = [json.loads(line) for line in lines if '"step_time"' in line]
        rows_m = rows_m[1:] or rows_m  # step 1 pays one-off costs
        loops = [r["step_time"] + r["data_time"] for r in rows_m]
        loop = min(loops)
        data_share = statistics.median(r["data_time"] for r in rows_m)
        bare_after = bare_time(load_align(summary["checkpoint"]).model)
        bares = bare_before + bare_after
        bare = min(bares)
        per_image_warm = build_warm / n_images
        with_load = loop + batch_size * per_image_warm
        image_size = Preprocess.from_dict(pre).image_size
        values = {"model": kit.model_name, "image_size": image_size, "batch_size": batch_size,
                  "originals": f"{n_images} JPEG, long side {long_side}", "steps": steps,
                  "dataset_build_cold_s": round(build_cold, 3), "dataset_build_warm_s": round(build_warm, 3),
                  "cache_per_image_cold_s": round(build_cold / n_images, 4),
                  "cache_per_image_warm_s": round(per_image_warm, 4), "run_wall_s": round(run_wall, 2),
                  "loop_step_s": round(loop, 4), "median_loop_step_s": round(_med(loops), 4),
                  "median_data_time_s": round(data_share, 4), "bare_fwd_bwd_s": round(bare, 4),
                  "median_bare_fwd_bwd_s": round(_med(bares), 4),
                  "bare_runs_s": {"before": [round(x, 4) for x in bare_before],
                                  "after": [round(x, 4) for x in bare_after]},
                  "step_with_warm_load_s": round(with_load, 4),
                  "ratio": round(loop / bare, 3), "ratio_with_warm_load": round(with_load / bare, 3),
                  "target_ratio": 1.3}
        b = batch_size
        rows = [_row(f"dataset build, {n_images} x {long_side}px JPEG, cache cold", build_cold, "s"),
                _row(f"dataset build, {n_images} x {long_side}px JPEG, cache warm", build_warm, "s"),
                _row(f"Stage A loop step (batch {b}, {image_size}px; data+fwd+bwd+opt)", loop, "s"),
                _row("bare fwd+bwd, same model/loss/batch (before & after the run)", bare, "s"),
                _row("loop step / bare", loop / bare, "x", 1.3),
                _row(f"(loop step + {b} x warm load per image) / bare", with_load / bare, "x", 1.3)]
        return values, rows

    return _part(run)


# --- the table ---------------------------------------------------------------------------------

def format_rows(part: str, res: dict[str, Any]) -> list[str]:
    """The table lines of one part: its rows, then when it ran under which load."""
    lines = []
    for r in res.get("rows", []):
        unit = r["unit"]
        val = f"{r['value']:.2f}x" if unit == "x" else f"{r['value']:.3f} {unit}"
        tgt = ""
        if "target" in r:
            tgt = f"<= {r['target']}{'x' if unit == 'x' else ' ' + unit}  {'ok' if r['ok'] else 'MISSED'}"
        lines.append(f"{part:<12} {r['what']:<66} {val:>11}  {tgt}".rstrip())
    la0, la1 = (res.get("load_avg_start") or ["?"])[0], (res.get("load_avg_end") or ["?"])[0]
    lines.append(f"{'':<12} ({res.get('seconds', '?')} s; load avg 1 min {la0} -> {la1}; {res.get('threads')} threads)")
    return lines


def speed_table(results: dict[str, Any]) -> str:
    head = f"{'part':<12} {'measurement':<66} {'value':>11}  target"
    lines = [head, "-" * len(head),
             "times: best of the repeats, the ratios' two sides interleaved (medians in bench.json)"]
    for part, res in results.items():
        if isinstance(res, dict) and res.get("rows"):
            lines += format_rows(part, res)
    return "\n".join(lines)


MODEL_PARTS = ("infer_cold", "infer", "infer_batch", "pseudo", "train")


def run_model_parts(parts: list[str], *, model_name: str = "gaudi-lite0", image_size: int | None = None,
                    work_dir: str | None = None, big: tuple[int, int] = (2048, 3072), mid: tuple[int, int] = (512, 768),
                    small: tuple[int, int] = (128, 192), train_side: int = 2048, repeats: int = 4,
                    cold_repeats: int = 3, batch_images: int = 4, batch_rounds: int = 2, pseudo_images: int = 8,
                    train_images: int = 32, train_steps: int = 6, batch_size: int = 16,
                    on_part: Callable[[str, dict], None] | None = None) -> dict[str, Any]:
    """The model parts asked for, sharing one work folder (a temporary one unless `work_dir`)."""
    tmp = None
    if work_dir:
        root = Path(work_dir)
        root.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="gaudi_bench_speed_")
        root = Path(tmp.name)
    out: dict[str, Any] = {}
    try:
        kit = SpeedKit(root, model_name=model_name, image_size=image_size)
        for part in [p for p in MODEL_PARTS if p in parts]:
            if part == "infer_cold":
                out[part] = bench_infer_cold(kit, size=big, repeats=cold_repeats)
            elif part == "infer":
                out[part] = bench_infer(kit, mid=mid, big=big, repeats=repeats)
            elif part == "infer_batch":
                out[part] = bench_infer_batch(kit, small=small, big=big, n_images=batch_images, rounds=batch_rounds)
            elif part == "pseudo":
                out[part] = bench_pseudo(kit, small=small, big=big, n_images=pseudo_images)
            elif part == "train":
                out[part] = bench_train_step(kit, long_side=train_side, n_images=train_images,
                                             batch_size=batch_size, steps=train_steps)
            if on_part:
                on_part(part, out[part])
        if kit.setup_seconds is not None:
            out["setup"] = {"model": model_name, "image_size": image_size, "checkpoints_seconds": kit.setup_seconds,
                            "checkpoints": "Stage A (2 steps) + segmenter on GT (2 steps), batch 4: "
                                           "for speed, not quality"}
    finally:
        if tmp is not None:
            tmp.cleanup()
    return out
