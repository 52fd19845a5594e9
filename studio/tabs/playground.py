"""Playground tab: upload an image, choose tags, get one mask per tag (gaudi_engine.infer.Predictor).
The same inference is the API endpoint `infer` (gradio_client: image, "tag1 tag2" -> overlay, JSON)."""
from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from gaudi_engine.errors import GaudiError

from ..state import StudioState, current_tab, guard
from ..uploads import open_upload, picture_upload
from .pseudo_masks import color_map

NONE = "(none)"


def vocabulary(state: StudioState) -> list[str]:
    from gaudi_engine.text.descriptions import general_tags_table

    return [r["tag"] for r in general_tags_table(state.cat, search="", order="post_count")]


def checkpoint_choices(state: StudioState) -> tuple[list[str], list[str]]:
    from gaudi_engine.studio_views import checkpoints

    return checkpoints(state.ws, "align"), [NONE] + checkpoints(state.ws, "seg")


def predictor(state: StudioState, align: str | None, seg: str | None):
    """A cached Predictor for these checkpoints (reloaded when a file changes)."""
    from gaudi_engine.infer import Predictor

    if not align:
        raise GaudiError(_demo_line(state).replace("**", "")
                         or "no Stage A checkpoint yet: train one in the Train tab (or pick one)")
    a = state.ws.resolve(align)
    s = state.ws.resolve(seg) if seg and seg != NONE else None
    for p in (a, s):
        if p is not None and not p.exists():
            raise GaudiError(f"checkpoint not found: {state.ws.rel(p)}")
    key = (str(a), a.stat().st_mtime, str(s), s.stat().st_mtime if s else None)
    with state.predict_lock:
        if key not in state.predictors:
            state.predictors.clear()  # one model in memory at a time
            state.predictors[key] = Predictor(str(a), str(s) if s else None, device="cpu")
        return state.predictors[key]


def parse_tags(tags) -> list[str]:
    if isinstance(tags, str):
        tags = tags.replace(",", " ").split()
    out = []
    for t in tags or []:
        t = str(t).strip().lower().replace(" ", "_")
        if t and t not in out:
            out.append(t)
    return out


def run_inference(state: StudioState, image, tags, align=None, seg=None, threshold=0.5):
    """(PIL image, result dict) for an image (an uploaded file's path or a PIL image) and tags, with
    the latest checkpoints by default."""
    if image is None:
        raise GaudiError("upload an image first")
    tags = parse_tags(tags)
    if not tags:
        raise GaudiError("choose at least one tag")
    if align is None and seg is None:
        aligns, segs = checkpoint_choices(state)
        align, seg = (aligns[0] if aligns else None), (segs[1] if len(segs) > 1 else None)
    img = open_upload(image, state.max_upload_bytes)  # size-checked, decoded by the engine (one line if not)
    pred = predictor(state, align, seg)
    with state.predict_lock:  # torch on 2 cores: one inference at a time
        result = pred.predict(img, tags, threshold=float(threshold))
    model = result.get("model") or {}
    for key in ("align_ckpt", "segmenter_ckpt"):  # no server paths in results: workspace-relative
        if model.get(key):
            model[key] = state.ws.rel(model[key])
    return img, pred, result


def samples() -> list[list]:
    """Playground samples (assets/samples/NAME.png) with their tags (NAME.txt beside)."""
    out = []
    for png in sorted((Path(__file__).resolve().parents[2] / "assets" / "samples").glob("*.png")):
        txt = png.with_suffix(".txt")
        tags = parse_tags(txt.read_text(encoding="utf-8")) if txt.exists() else []
        out.append([str(png), tags])
    return out


NO_CHECKPOINT = "No Stage A checkpoint yet: train one in the Train tab (Stage A or Run all), then come back."


def _demo_line(state: StudioState) -> str:
    from ..demo_model import training_line

    return training_line(state, "Segment works") or ""


def no_checkpoint_hint(state: StudioState) -> str:
    """What the Playground says while it cannot segment: the demo model's progress, if it is training."""
    return _demo_line(state) or NO_CHECKPOINT


def save_outputs(state: StudioState, img, result: dict) -> tuple[Path, Path]:
    """out.json and a zip of per-tag PNG masks under runs/_studio/playground/."""
    from PIL import Image

    from gaudi_engine import rle

    out = state.ws.runs_dir / "_studio" / "playground" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    out.mkdir(parents=True, exist_ok=True)
    js = out / "out.json"
    js.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    zpath = out / "masks.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for t in result.get("tags", []):
            m = rle.decode(t["mask"]).astype(np.uint8) * 255
            bio = io.BytesIO()
            Image.fromarray(m).save(bio, format="PNG")
            zf.writestr(f"{t['tag']}.png", bio.getvalue())
    return js, zpath


def build(state: StudioState) -> None:
    from gaudi_engine import rle

    aligns, segs = checkpoint_choices(state)
    with gr.Row():
        with gr.Column(scale=2):
            image = picture_upload(label=f"Image (up to {state.max_upload_bytes / 2**20:g} MB)", height=320,
                                   elem_id="pg-image")
            tags = gr.Dropdown(vocabulary(state), value=[], multiselect=True, allow_custom_value=True,
                               label="Tags (pick or type)", elem_id="pg-tags")
            with gr.Row():
                align = gr.Dropdown(aligns, value=aligns[0] if aligns else None, label="Stage A checkpoint",
                                    allow_custom_value=True)
                seg = gr.Dropdown(segs, value=segs[1] if len(segs) > 1 else NONE, label="Segmenter checkpoint",
                                  allow_custom_value=True)
            threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="Threshold")
            # Segment waits for a checkpoint (picked, or trained while the studio is open)
            run = gr.Button("Segment", variant="primary", elem_id="pg-run", interactive=bool(aligns))
            hint = gr.Markdown("" if aligns else no_checkpoint_hint(state), elem_id="pg-hint")
            examples = samples()
            if examples:
                gr.Examples(examples, inputs=[image, tags], label="Samples (SynthBooru, with their tags)",
                            elem_id="pg-samples")
        with gr.Column(scale=3):
            overlay = gr.AnnotatedImage(label="Masks", height=420, elem_id="pg-overlay")
            table = gr.Dataframe(pd.DataFrame(columns=["tag", "score", "area"]), label="Per tag",
                                 interactive=False, elem_id="pg-table")
            files = gr.File(label="Download (JSON, PNG masks)", file_count="multiple", interactive=False,
                            elem_id="pg-files")

    @guard
    def on_run(img, t, a, s, thr):
        img, _, result = run_inference(state, img, t, a or None, s or NONE, thr)
        arr = np.asarray(img)
        anns = [(rle.decode(r["mask"]).astype(np.float32) * 0.45, r["tag"]) for r in result.get("tags", [])]
        df = pd.DataFrame([{"tag": r["tag"], "score": round(float(r["score"]), 4), "area": int(r["area"])}
                           for r in result.get("tags", [])], columns=["tag", "score", "area"])
        js, zp = save_outputs(state, img, result)
        return (gr.update(value=(arr, anns), color_map=color_map([r["tag"] for r in result.get("tags", [])])),
                df, [str(js), str(zp)])

    run.click(on_run, [image, tags, align, seg, threshold], [overlay, table, files])

    # API only: gradio_client.predict(handle_file(path), "tag1 tag2", api_name="/infer")
    api_image = picture_upload(visible=False)
    api_tags = gr.Textbox(visible=False)
    api_overlay = gr.Image(type="pil", format="png", visible=False)  # the client gets a PNG file
    api_json = gr.JSON(visible=False)
    api_btn = gr.Button(visible=False)

    @guard
    def infer(img, tag_string: str):
        img, pred, result = run_inference(state, img, tag_string)
        return pred.overlay(img, result), result

    api_btn.click(infer, [api_image, api_tags], [api_overlay, api_json], api_name="infer")

    def on_show(cur_a, cur_s):
        a_list, s_list = checkpoint_choices(state)
        a = cur_a if cur_a in a_list else (a_list[0] if a_list else None)
        s = cur_s if cur_s in s_list and cur_s != NONE else (s_list[1] if len(s_list) > 1 else NONE)
        return (gr.update(choices=a_list, value=a), gr.update(choices=s_list, value=s),
                gr.update(choices=vocabulary(state))) + ready(a)

    def ready(a) -> tuple:
        return gr.update(interactive=bool(a)), ("" if a else no_checkpoint_hint(state))

    current_tab().select(on_show, [align, seg], [align, seg, tags, run, hint])
    align.input(ready, align, [run, hint])  # a checkpoint path typed in

    seen = gr.State("")  # what the page last showed: the timer writes only when it changes

    def follow(cur_a, cur_s, last):
        """Every few seconds: a checkpoint that lands (the demo model's, or a Train-tab job's)
        enables Segment, and the demo model's progress shows meanwhile."""
        a_list, s_list = checkpoint_choices(state)
        line = "" if (a_list and cur_a) else no_checkpoint_hint(state)
        key = json.dumps([a_list, s_list, line])
        if key == last:
            return (gr.skip(),) * 4 + (last,)
        a = cur_a if cur_a in a_list else (a_list[0] if a_list else None)
        s = cur_s if cur_s in s_list and cur_s != NONE else (s_list[1] if len(s_list) > 1 else NONE)
        return (gr.update(choices=a_list, value=a), gr.update(choices=s_list, value=s),
                gr.update(interactive=bool(a)), "" if a else line, key)

    gr.Timer(3.0).tick(follow, [align, seg, seen], [align, seg, run, hint, seen], show_progress="hidden")
