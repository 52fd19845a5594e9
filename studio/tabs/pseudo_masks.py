"""Pseudo-masks tab: browse a pseudo-mask run like a dataset viewer — a gallery filtered by tag,
accepted/rejected and score ranges (PseudoMaskIndex over index.parquet, queried in place), and for
one image its accepted masks as an overlay with per-tag toggles and opacity, the rejected ones
apart, and the validators' scores."""
from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from gaudi_engine.errors import GaudiError

from ..state import StudioState, current_tab, guard

SCORE_FIELDS = ["quality", "consistency_iou", "deletion_drop", "insertion_keep", "cam_score", "prob",
                "margin", "area"]
STATUS = ["all", "accepted", "rejected"]
GALLERY_CAP = 120
SCORE_TABLE = ["tag", "accepted", "reason", "quality", "consistency_iou", "deletion_drop", "insertion_keep",
               "cam_score", "prob", "area"]
EXPORT_FORMATS = [("PNG masks", "png"), ("soft maps", "scores"), ("COCO RLE", "coco"),
                  ("CVAT seg. mask", "cvat"), ("FiftyOne", "fiftyone")]
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"]


def color_map(tags) -> dict[str, str]:
    return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(sorted(tags))}


def run_choices(state: StudioState) -> tuple[list[tuple[str, str]], str | None, dict[str, str]]:
    """(dropdown choices, default run, {run: "in progress" line}): finished runs newest first, and
    the runs being written, labelled with their count so far. The default is the newest finished
    run, else the one being written."""
    from gaudi_engine.studio_views import pseudomask_runs, pseudomask_runs_in_progress

    finished = pseudomask_runs(state.ws)
    writing = {name: f"**{name}** is being written: {done:,} of {total:,} posts so far" if total else
               f"**{name}** is being written: {done:,} posts so far"
               for name, done, total in pseudomask_runs_in_progress(state.ws)}
    choices = [(f"{n} (in progress)", n) for n in writing] + [(n, n) for n in finished]
    default = finished[0] if finished else next(iter(writing), None)
    return choices, default, writing


def no_run_line(state: StudioState) -> str:
    from ..demo_model import training_line

    return (training_line(state, "its pseudo-masks show here")
            or "No pseudo-mask run yet: run *Pseudo-labels v1* in the Train tab.")


def _index(state: StudioState, run: str):
    from gaudi_engine.pseudo.index import PseudoMaskIndex

    if not run:
        raise GaudiError("no pseudo-mask run yet: run \"Pseudo-labels v1\" in the Train tab")
    return PseudoMaskIndex(state.ws.runs_dir / run)


def filtered_rows(state: StudioState, run: str, tag: str | None, status: str, field: str,
                  lo: float, hi: float) -> pd.DataFrame:
    idx = _index(state, run)
    accepted = {"accepted": True, "rejected": False}.get(status)
    # the full range means "no score filter" (rows without that score stay)
    full = lo <= 0 and hi >= 1
    try:
        return idx.query(tag=tag or None, accepted=accepted, score=field,
                         score_min=None if full else lo, score_max=None if full else hi)
    finally:
        idx.close()


def image_of(state: StudioState, post_id: int, manifest: dict | None = None):
    """A post's image: from the catalogue, else from the manifest the run was made from."""
    from gaudi_engine.catalogue.queries import post_image_path
    from gaudi_engine.studio_views import manifest_images

    path = post_image_path(state.ws, state.cat, int(post_id))
    if path is None:
        path = (manifest if manifest is not None else manifest_images(state.ws)).get(int(post_id))
    return path


def gallery_for(state: StudioState, df: pd.DataFrame, limit: int = GALLERY_CAP) -> tuple[list, list[int]]:
    from gaudi_engine.studio_views import manifest_images

    if df.empty:
        return [], []
    manifest = manifest_images(state.ws)
    items, ids = [], []
    for post_id, group in df.groupby("post_id", sort=False):
        path = image_of(state, int(post_id), manifest)
        if path is None or not path.exists():
            continue
        marks = " ".join(f"{t}{'✓' if a else '✗'}" for t, a in zip(group["tag"], group["accepted"]))
        items.append((str(path), f"#{post_id} {marks}"))
        ids.append(int(post_id))
        if len(ids) >= limit:
            break
    return items, ids


def summary_line(df: pd.DataFrame, shown: int) -> str:
    """What the filter matches (not what the gallery shows): images, masks, verdicts."""
    n_images = int(df["post_id"].nunique()) if not df.empty else 0
    n_acc = int(df["accepted"].sum()) if not df.empty else 0
    text = (f"{n_images:,} image(s), {len(df):,} mask(s): {n_acc:,} accepted, {len(df) - n_acc:,} rejected")
    if shown < n_images:
        text += f" · the gallery shows the first {shown:,} (narrow the filter to see others)"
    return text


def image_view(state: StudioState, run: str, post_id: int, shown_tags, opacity: float):
    """(accepted overlay value, rejected overlay value, scores frame, tag choices)."""
    from PIL import Image

    from gaudi_engine.studio_views import pseudo_masks

    path = image_of(state, int(post_id))
    if path is None or not path.exists():
        raise GaudiError(f"image of post {post_id} is not on disk")
    img = np.asarray(Image.open(path).convert("RGB"))
    index = _index(state, run)
    accepted, rejected = pseudo_masks(index, int(post_id))
    shown = set(accepted) if shown_tags is None else set(shown_tags)

    def anns(masks: dict, keep) -> list:
        out = []
        for tag, m in sorted(masks.items()):
            if tag in keep:
                if m.shape != img.shape[:2]:  # masks at the image's resolution; guard old runs
                    m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(img.shape[1::-1])) > 127
                out.append((m.astype(np.float32) * float(opacity), tag))
        return out

    scores = pd.DataFrame(index.scores(int(post_id)))
    scores = scores[[c for c in SCORE_TABLE if c in scores.columns]].round(3)
    index.close()
    return (img, anns(accepted, shown)), (img, anns(rejected, set(rejected))), scores, sorted(accepted)


def build(state: StudioState) -> None:
    choices, default, _ = run_choices(state)
    with gr.Row():
        run = gr.Dropdown(choices, value=default, label="Pseudo-mask run", scale=2, elem_id="pm-run")
        refresh = gr.Button("↻ Runs", size="sm", scale=0)
        tag = gr.Dropdown([], value=None, label="Tag", allow_custom_value=True, scale=2, elem_id="pm-tag")
        status = gr.Radio(STATUS, value="all", label="Masks", scale=2)
    with gr.Row():
        field = gr.Dropdown(SCORE_FIELDS, value="quality", label="Score", scale=1)
        lo = gr.Slider(0, 1, value=0, step=0.01, label="min", scale=2)
        hi = gr.Slider(0, 1, value=1, step=0.01, label="max", scale=2)
    with gr.Row():
        with gr.Column(scale=2):
            # columns: as many as fit (studio.css), this is only Gradio's starting value
            gallery = gr.Gallery([], label="Images", columns=4, height=560, object_fit="contain",
                                 allow_preview=False, elem_id="pm-gallery")
            summary = gr.Markdown("", elem_id="pm-summary")
            formats = gr.CheckboxGroup(EXPORT_FORMATS, value=[v for _, v in EXPORT_FORMATS],
                                       label="Export formats (accepted masks of the tag filter, or all)",
                                       elem_id="pm-formats")
            export = gr.Button("Export accepted masks", size="sm", elem_id="pm-export")
            files = gr.File(label="Exports", file_count="multiple", interactive=False, visible=False,
                            elem_id="pm-files")
        with gr.Column(scale=3):
            with gr.Row():
                prev = gr.Button("◀ Previous", size="sm", elem_id="pm-prev")
                title = gr.Markdown("Pick an image", elem_id="pm-title")
                nxt = gr.Button("Next ▶", size="sm", elem_id="pm-next")
            toggles = gr.CheckboxGroup([], label="Tags shown", elem_id="pm-toggles")
            opacity = gr.Slider(0.1, 1.0, value=0.55, step=0.05, label="Opacity")
            overlay = gr.AnnotatedImage(label="Accepted masks", height=380, elem_id="pm-overlay")
            rejected = gr.AnnotatedImage(label="Rejected masks and parts", height=240, elem_id="pm-rejected")
            one = gr.Button("Download this image's masks + soft maps", size="sm", elem_id="pm-download",
                            interactive=False)
            one_file = gr.File(label="This image", interactive=False, visible=False, elem_id="pm-image-files")
    scores = gr.Dataframe(pd.DataFrame(columns=SCORE_TABLE), label="Validator scores of this image",
                          interactive=False, elem_id="pm-scores")
    ids = gr.State([])
    pos = gr.State(-1)
    filters = [run, tag, status, field, lo, hi]

    @guard
    def on_filter(r, t, s, f, a, b):
        _, _, writing = run_choices(state)
        if r in writing or (not r and writing):
            line = writing.get(r) or next(iter(writing.values()))
            return [], [], -1, f"{line}; its masks show here when it ends (this page follows it).", gr.skip()
        if not r:
            return [], [], -1, no_run_line(state), gr.skip()
        df = filtered_rows(state, r, t, s, f, a, b)
        items, post_ids = gallery_for(state, df)
        text = summary_line(df, len(post_ids))
        if writing:
            text += "  \n" + "; ".join(writing.values()) + " (pick it above to follow it)"
        idx = _index(state, r)
        tags = [str(row["tag"]) for row in idx.tags()]
        idx.close()
        return items, post_ids, -1, text, gr.update(choices=tags)

    for comp in (run, status, field):
        comp.change(on_filter, filters, [gallery, ids, pos, summary, tag])
    tag.change(on_filter, filters, [gallery, ids, pos, summary, tag])
    for comp in (lo, hi):
        comp.release(on_filter, filters, [gallery, ids, pos, summary, tag])

    @guard
    def show(r, post_ids, i, shown, op, reset_toggles=True):
        if not post_ids or i < 0:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), i, gr.skip(), gr.skip()
        i = i % len(post_ids)
        acc, rej, sc, tags = image_view(state, r, post_ids[i], None if reset_toggles else shown, op)
        cmap = color_map(set(tags) | {t for _, t in rej[1]})
        tog = gr.update(choices=tags, value=tags) if reset_toggles else gr.skip()
        return (gr.update(value=acc, color_map=cmap), gr.update(value=rej, color_map=cmap), sc, tog,
                f"**#{post_ids[i]}** ({i + 1}/{len(post_ids)})", i, gr.update(interactive=True),
                gr.update(value=None, visible=False))

    outs = [overlay, rejected, scores, toggles, title, pos, one, one_file]

    def on_select(evt: gr.SelectData, r, post_ids, shown, op):
        return show(r, post_ids, evt.index, shown, op)

    gallery.select(on_select, [run, ids, toggles, opacity], outs)
    prev.click(lambda r, p, i, s, o: show(r, p, i - 1, s, o), [run, ids, pos, toggles, opacity], outs)
    nxt.click(lambda r, p, i, s, o: show(r, p, i + 1, s, o), [run, ids, pos, toggles, opacity], outs)
    toggles.input(lambda r, p, i, s, o: show(r, p, i, s, o, False), [run, ids, pos, toggles, opacity], outs)
    opacity.release(lambda r, p, i, s, o: show(r, p, i, s, o, False), [run, ids, pos, toggles, opacity], outs)

    @guard
    def on_refresh(current, t, s, f, a, b):
        choices, default, _ = run_choices(state)
        r = current if current in {v for _, v in choices} else default
        return (gr.update(choices=choices, value=r),) + tuple(on_filter(r, t, s, f, a, b))

    refresh.click(on_refresh, filters, [run, gallery, ids, pos, summary, tag])

    @guard
    def on_export(r, t, fmts):
        from gaudi_engine.pseudo.export import export_run

        if not r:
            raise GaudiError("pick a pseudo-mask run first")
        if not fmts:
            raise GaudiError("tick at least one export format")
        out = export_run(state.ws.runs_dir / r, state.ws, formats=fmts, tag=t or None)
        gr.Info(f"exported {out['annotations']} masks of {out['images']} images"
                + (f" (tag {t})" if t else ""))
        return gr.update(value=[str(p) for p in out["files"].values()], visible=True)

    export.click(on_export, [run, tag, formats], files)

    @guard
    def on_download_one(r, post_ids, i):
        from gaudi_engine.pseudo.export import export_post

        if not r or not post_ids or i < 0:
            raise GaudiError("pick an image first")
        post_id = post_ids[i % len(post_ids)]
        out = export_post(state.ws.runs_dir / r, post_id,
                          state.ws.runs_dir / r / "export" / "images" / f"{r}_{post_id}.zip")
        return gr.update(value=str(out), visible=True)

    one.click(on_download_one, [run, ids, pos], one_file)

    # runs appear while the studio is open (Train tab): look again whenever the tab is shown
    current_tab().select(on_refresh, filters, [run, gallery, ids, pos, summary, tag])

    following = gr.State("")  # the run being written that this page shows

    def follow(current, t, s, f, a, b, watched):
        """Every few seconds: a run being written shows its new count, and its masks once it ends."""
        try:
            _, default, writing = run_choices(state)
            if current and current in writing:
                return (gr.skip(),) * 4 + (on_filter(current, t, s, f, a, b)[3], gr.skip(), current)
            if (watched and watched not in writing) or (not current and default):
                return (*on_refresh(current, t, s, f, a, b), "")
            if not current and not default:  # nothing to show yet: the demo model's progress, if training
                return (gr.skip(),) * 4 + (no_run_line(state),) + (gr.skip(),) * 2
        except Exception:  # a run deleted or half-written under us: the next tick looks again
            pass
        return (gr.skip(),) * 7

    gr.Timer(3.0).tick(follow, [*filters, following], [run, gallery, ids, pos, summary, tag, following],
                       show_progress="hidden")
