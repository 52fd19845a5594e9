"""Train tab: Stage A, pseudo-labels v1, Stage B, round 2 and "Run all", each a job of `gaudi`
subprocesses (JobManager). The studio first exports the manifest and tag_descriptions.json from
the catalogue, because the subprocesses must not open the DuckDB file it holds. Every launch writes
new runs (`gaudi_engine.runs`: align_s1, align_s1-002, ...) and reads the newest finished run of
each input kind as the job starts; the Runs table shows what each run was made from, and deletes
one only after a confirm."""
from __future__ import annotations

import functools
import time

import gradio as gr
import pandas as pd

from gaudi_engine.errors import GaudiError
from gaudi_engine.jobs import Step
from gaudi_engine.runs import (ALIGN, PSEUDO_V1, PSEUDO_V2, SEG_S1, SEG_S2, input_of, latest_checkpoint_of,
                               latest_run, new_run_name)
from gaudi_engine.workspace import Workspace

from ..state import StudioState, guard, progress_html

MANIFEST = "data/manifest.csv"
TAG_DESC = "data/tag_descriptions.json"
MODELS = ["gaudi-lite0", "gaudi-tiny", "ViT-B-16", "ViT-B-32", "convnext_tiny"]
STAGE_INPUT = {"Pseudo-labels v1": "Stage A", "Stage B": "Pseudo-labels v1", "Round 2": "Stage B"}


@functools.lru_cache(maxsize=None)
def supported_flags(command: str) -> frozenset[str]:
    """The option strings the installed `gaudi COMMAND` accepts (knobs are passed only if so)."""
    from gaudi_engine.cli import build_parser

    parser = build_parser()
    for action in parser._subparsers._group_actions:  # argparse keeps subcommands here
        sub = action.choices.get(command) if hasattr(action, "choices") else None
        if sub is not None:
            return frozenset(o for a in sub._actions for o in a.option_strings)
    return frozenset()


def _argv(command: str, required: dict[str, str], knobs: dict[str, object]) -> list[str]:
    argv = [command]
    for flag, value in required.items():
        argv += [flag, str(value)]
    flags = supported_flags(command)
    for flag, value in knobs.items():
        if value not in (None, "") and flag in flags:
            argv += [flag, str(value)]
    return argv


class RunNames:
    """The run folders of one job: each output a new run of its kind; each input the run an
    earlier step of the job writes, else the newest finished run of its kind in the workspace.
    Without a workspace: the kinds' own names (a fresh workspace's)."""

    def __init__(self, ws: Workspace | None):
        self.ws = ws
        self.made: dict[str, str] = {}

    def out(self, kind: str) -> str:
        self.made[kind] = f"runs/{new_run_name(self.ws, kind) if self.ws else kind}"
        return self.made[kind]

    def run(self, kind: str, needed_by: str) -> str:
        if kind in self.made or self.ws is None:
            return self.made.get(kind, f"runs/{kind}")
        found = latest_run(self.ws, kind)
        if found is None:
            raise GaudiError(f"no finished {kind} run yet: run {STAGE_INPUT.get(needed_by, 'the stage before')} "
                             f"first (or Run all)")
        return f"runs/{found.name}"

    def checkpoint(self, kind: str, needed_by: str) -> str:
        if kind in self.made or self.ws is None:
            return f"{self.run(kind, needed_by)}/checkpoints/model.pt"
        found = latest_checkpoint_of(self.ws, kind)
        if found is None:
            raise GaudiError(f"no finished {kind} checkpoint yet: run {STAGE_INPUT.get(needed_by, 'the stage before')} "
                             f"first (or Run all)")
        return found


    def upstream(self, ckpt: str, *keys: str) -> str | None:
        """What the run holding `ckpt` (runs/NAME/...) was made from, following `keys` (lineage)."""
        if self.ws is None or ALIGN in self.made:
            return None
        return input_of(self.ws, ckpt.split("/")[1], *keys)


def pipeline_steps(which: str, k: dict, ws: Workspace | None = None) -> list[Step]:
    """The CLI calls of one button. `k`: model, pretrained, image_size, epochs, batch_size, device
    (and seg_epochs: Stage B's, when not `epochs`). "Demo model" is the job a demo studio starts by itself.
    With `ws`: new run names and the newest inputs as of now (`RunNames`)."""
    common = {"--manifest": MANIFEST, "--tag-desc": TAG_DESC}
    knobs = {"--model": k.get("model"), "--pretrained": k.get("pretrained"),
             "--image-size": k.get("image_size"), "--epochs": k.get("epochs"),
             "--batch-size": k.get("batch_size"), "--device": k.get("device")}
    run_knobs = {f: v for f, v in knobs.items() if f in ("--batch-size", "--device", "--image-size")}
    seg_knobs = {**run_knobs, "--epochs": k.get("seg_epochs") or k.get("epochs")}
    names = RunNames(ws)
    steps: list[Step] = []
    stages = {"Stage A": ["Stage A"], "Pseudo-labels v1": ["Pseudo-labels v1"], "Stage B": ["Stage B"],
              "Round 2": ["Pseudo-labels v2", "Stage B round 2"],
              "Demo model": ["Stage A", "Pseudo-labels v1", "Stage B"],
              "Run all": ["Stage A", "Pseudo-labels v1", "Stage B", "Pseudo-labels v2", "Stage B round 2"]}[which]
    for stage in stages:
        if stage == "Stage A":
            argv = _argv("train-align", {**common, "--out": names.out(ALIGN)}, knobs)
        elif stage == "Pseudo-labels v1":
            align = names.checkpoint(ALIGN, which)
            argv = _argv("pseudolabels", {**common, "--align-ckpt": align, "--out": names.out(PSEUDO_V1)},
                         run_knobs)
        elif stage == "Stage B":
            pm = names.run(PSEUDO_V1, which)
            argv = _argv("train-segmenter", {**common, "--pseudomasks": pm, "--out": names.out(SEG_S1)}, seg_knobs)
        elif stage == "Pseudo-labels v2":
            seg1 = names.checkpoint(SEG_S1, which)
            # the Stage A that s1's pseudo-masks came from (a newer one would not match s1)
            align = names.upstream(seg1, "pseudomasks", "align_ckpt") or names.checkpoint(ALIGN, which)
            argv = _argv("pseudolabels", {**common, "--align-ckpt": align, "--segmenter-ckpt": seg1,
                                          "--out": names.out(PSEUDO_V2)}, run_knobs)
        else:  # s2 goes on training s1 on the round-2 masks (self-training, as in MaskCLIP+)
            argv = _argv("train-segmenter", {**common, "--pseudomasks": names.run(PSEUDO_V2, which),
                                             "--init-from": names.checkpoint(SEG_S1, which),
                                             "--out": names.out(SEG_S2)}, seg_knobs)
        steps.append(Step(stage, argv))
    return steps


def submit_pipeline(state: StudioState, which: str, k: dict):
    """Queue a button's job. Its run names and inputs are settled when it starts (after the jobs
    queued before it have written theirs), together with the exported manifest."""
    steps = pipeline_steps(which, k)

    def prepare() -> None:
        export_inputs(state)
        for step, now in zip(steps, pipeline_steps(which, k, state.ws)):
            step.argv = now.argv

    return state.jobs.submit(which, steps, prepare=prepare)


def export_inputs(state: StudioState) -> None:
    """Manifest + descriptions from the catalogue, for the subprocesses."""
    from gaudi_engine.catalogue.manifest import export_manifest
    from gaudi_engine.text.descriptions import export_json

    from gaudi_engine.errors import GaudiError

    n = export_manifest(state.ws, state.cat, state.ws.resolve(MANIFEST))
    if not n:
        raise GaudiError("no post has its image on disk yet: sync (and fetch images) in the Sync tab first")
    export_json(state.cat, state.ws.resolve(TAG_DESC))


def jobs_frame(state: StudioState) -> pd.DataFrame:
    rows = []
    for j in state.jobs.jobs()[:30]:
        step = j.steps[j.current].name if j.steps else ""
        pct = state.jobs.progress(j).fraction * 100 if j.status == "running" else (100 if j.status == "done" else None)
        rows.append({"job": j.id, "title": j.title, "status": j.status,
                     "step": f"{j.current + 1}/{len(j.steps)} {step}",
                     "progress": f"{pct:.0f}%" if pct is not None else "",
                     "started": time.strftime("%H:%M:%S", time.localtime(j.started)) if j.started else "",
                     "error": j.error or ""})
    return pd.DataFrame(rows, columns=["job", "title", "status", "step", "progress", "started", "error"])


def runs_frame(state: StudioState) -> pd.DataFrame:
    from gaudi_engine.studio_views import RUNS_COLUMNS, list_runs

    return pd.DataFrame(list_runs(state.ws), columns=RUNS_COLUMNS)


def delete_run(state: StudioState, name: str) -> str:
    """Delete a run the running job does not write to; the message says what went."""
    from gaudi_engine.runs import delete_run as delete

    job = state.jobs.running()
    if job is not None and f"runs/{name}" in job.steps[job.current].argv:
        raise GaudiError(f"{name} is being written by the running job: cancel it first")
    size = delete(state.ws, name)
    return f"Deleted run **{name}** ({size / 1e6:.1f} MB)."


def metrics_frame(view) -> pd.DataFrame:
    """The job's training loss, one line over all its steps (a Run all's stages follow each other
    on the x axis). From the loss carried by progress records (live, dense), else from the loop's
    logged metrics. One series on purpose: Gradio's plot fixes its colour domain when first drawn."""
    source = view.points or [m for m in view.metrics if isinstance(m.get("loss"), (int, float))]
    rows, offset, last_stage, last_step = [], 0, None, 0
    for rec in source:
        stage = rec.get("stage", "")
        step = int(rec.get("done", rec.get("step", 0)) or 0)
        if last_stage is not None and (stage != last_stage or step < last_step):
            offset += last_step  # a new stage (or a restarted counter) continues to the right
        last_stage, last_step = stage, step
        rows.append({"step": offset + step, "loss": float(rec["loss"])})
    # explicit dtypes: the axes are quantitative only for numeric columns (an empty frame would
    # otherwise make them nominal)
    return pd.DataFrame(rows, columns=["step", "loss"]).astype({"step": "int64", "loss": "float64"})


def build(state: StudioState) -> None:
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            model = gr.Dropdown(MODELS, value="gaudi-lite0", label="Model", allow_custom_value=True,
                                elem_id="train-model")
            pretrained = gr.Textbox("", label="Pretrained (open_clip tag or local file; empty = model default)",
                                    elem_id="train-pretrained")
            with gr.Row():
                # empty (or 0) knobs = the command's own (tuned) default
                image_size = gr.Number(0, label="Image size (0 = default)", precision=0, minimum=0,
                                      elem_id="train-size")
                epochs = gr.Number(0, label="Epochs (0 = default)", precision=0, minimum=0,
                                  elem_id="train-epochs")
            with gr.Row():
                batch_size = gr.Number(0, label="Batch size (0 = default)", precision=0, minimum=0,
                                      elem_id="train-batch")
                device = gr.Dropdown(["cpu", "cuda", "auto"], value="cpu", label="Device")
            with gr.Row():
                btn_a = gr.Button("Stage A", size="sm")
                btn_p = gr.Button("Pseudo-labels v1", size="sm")
                btn_b = gr.Button("Stage B", size="sm")
                btn_r = gr.Button("Round 2", size="sm")
            run_all = gr.Button("Run all", variant="primary", elem_id="train-run-all")
            cancel = gr.Button("Cancel running job", variant="stop", elem_id="train-cancel")
        with gr.Column(scale=2):
            bar = gr.HTML(progress_html(0, "no job"), elem_id="train-progress")
            status = gr.Markdown("", elem_id="train-status")
            plot = gr.LinePlot(metrics_frame(_empty_view()), x="step", y="loss",
                               title="Loss", x_title="step", y_title="loss",
                               height=260, elem_id="train-plot")
            logs = gr.Textbox(label="Log (tail)", lines=10, max_lines=10, interactive=False,
                              autoscroll=True, elem_id="train-log")
    queue = gr.Dataframe(jobs_frame(state), label="Jobs (one at a time; queued ones wait)",
                         interactive=False, elem_id="train-jobs")
    runs = gr.Dataframe(runs_frame(state), label="Runs: what each was made from, checkpoints", interactive=False,
                        wrap=True, column_widths=["11%", "9%", "8%", "27%", "10%", "10%", "17%", "8%"],
                        elem_id="train-runs")
    with gr.Row():
        # custom values allowed: runs appear after the page was built (the server checks a pick
        # against the choices it built the page with)
        doomed = gr.Dropdown(list(runs_frame(state)["run"]), value=None, label="Run", scale=2,
                             allow_custom_value=True, elem_id="train-delete-run")
        ask = gr.Button("Delete run…", size="sm", scale=0, elem_id="train-delete")
        with gr.Row(visible=False, elem_id="train-delete-confirm") as confirm_row:
            sure = gr.Button("Delete it for good", variant="stop", size="sm", elem_id="train-delete-yes")
            keep = gr.Button("Keep it", size="sm", elem_id="train-delete-no")
    deleted = gr.Markdown("", elem_id="train-delete-status")
    pending = gr.State("")  # the run the confirm asks about
    timer = gr.Timer(1.0)
    knobs = [model, pretrained, image_size, epochs, batch_size, device]

    def submitter(which: str):
        @guard
        def submit(m, p, size, ep, bs, dev):
            k = {"model": m, "pretrained": p.strip(), "image_size": int(size) if size else None,
                 "epochs": int(ep) if ep else None, "batch_size": int(bs) if bs else None,
                 "device": None if dev == "auto" else dev}
            job = submit_pipeline(state, which, k)
            gr.Info(f"queued {which} ({job.id}): it writes new runs, from the newest finished inputs")
            return jobs_frame(state)
        return submit

    for btn, which in ((btn_a, "Stage A"), (btn_p, "Pseudo-labels v1"), (btn_b, "Stage B"),
                       (btn_r, "Round 2"), (run_all, "Run all")):
        btn.click(submitter(which), knobs, queue)

    def on_cancel():
        job = state.jobs.running() or next(iter(state.jobs.queued()), None)
        if job is None:
            gr.Info("no job is running")
        else:
            state.jobs.cancel(job.id)
            gr.Info(f"cancelling {job.title}")

    cancel.click(on_cancel, None, None)

    def on_ask(name):
        if not name:
            gr.Info("pick a run to delete")
            return gr.update(visible=False), "", ""
        return gr.update(visible=True), f"Delete **{name}** and every file in it? This cannot be undone.", name

    @guard
    def on_delete(name):
        if not name:
            raise GaudiError("pick a run to delete")
        text = delete_run(state, name)
        frame = runs_frame(state)
        return gr.update(visible=False), text, gr.update(choices=list(frame["run"]), value=None), frame, ""

    ask.click(on_ask, doomed, [confirm_row, deleted, pending])
    sure.click(on_delete, pending, [confirm_row, deleted, doomed, runs, pending])
    keep.click(lambda: (gr.update(visible=False), "Kept.", ""), None, [confirm_row, deleted, pending])

    shown = gr.State("")  # what this page shows already: redraw plot/tables only on change

    def tick(last: str):
        # the job shown: the running one, else the most recent
        job = state.jobs.running() or next(iter(state.jobs.jobs()), None)
        runs_df, jobs_df = runs_frame(state), jobs_frame(state)
        if job is None:
            return progress_html(0, "no job"), "", gr.skip(), "", jobs_df, runs_df, last
        view = state.jobs.progress(job)
        step = job.steps[job.current]
        where = job.title if step.name == job.title else f"{job.title} · {step.name}"
        text = f"{where} · {step_text(view)}"
        msg = f"**{job.title}** — {job.status}"
        if job.error:
            msg += f"  \n⚠️ {job.error}"
        q = state.jobs.queued()
        if q:
            msg += f"  \nQueued: {', '.join(j.title for j in q)}"
        key = f"{job.id}:{len(view.metrics)}:{len(view.points)}:{jobs_df.to_json()}:{runs_df.to_json()}"
        if key == last:
            return (progress_html(view.fraction, text, job.status), msg, gr.skip(),
                    state.jobs.log_tail(job), gr.skip(), gr.skip(), last)
        return (progress_html(view.fraction, text, job.status), msg, metrics_frame(view),
                state.jobs.log_tail(job), jobs_df, runs_df, key)

    timer.tick(tick, shown, [bar, status, plot, logs, queue, runs, shown], show_progress="hidden")
    runs.change(lambda df: gr.update(choices=list(df["run"]) if len(df) else []), runs, doomed,
                show_progress="hidden")


def step_text(view) -> str:
    """What the step is doing: `calibrate-floors 40/96`, `load-model`, or `starting` before its first
    record (never a bare 0/?)."""
    if not view.stage:
        return "starting"
    if view.total:
        return f"{view.stage} {view.done}/{view.total}"
    return f"{view.stage} {view.done}" if view.done else view.stage


def _empty_view():
    from gaudi_engine.jobs import ProgressView

    return ProgressView()
