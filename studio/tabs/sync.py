"""Sync tab: posts from a Danbooru-compatible booru (Danbooru itself, or the demo booru) or a
local folder into the catalogue, then their images. Runs in a thread of the studio (it owns the
catalogue), polled by a timer, so the page never freezes."""
from __future__ import annotations

import os

import gradio as gr
import pandas as pd

from gaudi_engine.errors import GaudiError
from gaudi_engine.workspace import DanbooruSettings, mask_secret

from ..state import StudioState, guard, progress_html

DEMO, DANBOORU, FOLDER = "Demo booru", "Danbooru", "Local folder"
RATINGS = ["all", "g", "s", "q", "e", "sfw", "nsfw"]
COUNT_LABELS = [("posts", "posts"), ("ok", "images ok"), ("failed", "failed"),
                ("not_downloadable", "not downloadable"), ("not_image", "not image")]


def _credentials_line() -> str:
    s = DanbooruSettings.from_env()
    return (f"Credentials from the environment: user **{s.username or '(anonymous)'}**, API key "
            f"`{mask_secret(s.api_key)}` (`DANBOORU_USERNAME` / `DANBOORU_API_KEY`; never stored).")


def counts_table(state: StudioState) -> pd.DataFrame:
    from gaudi_engine.catalogue.queries import counts

    c = counts(state.cat)
    media = c.get("media", {}) if isinstance(c.get("media"), dict) else {}
    flat = {**c, **media}
    return pd.DataFrame([{label: int(flat.get(key, 0) or 0) for key, label in COUNT_LABELS}])


def gallery_items(state: StudioState, limit: int = 48) -> list[tuple[str, str]]:
    from gaudi_engine.catalogue.queries import latest_posts

    items = []
    for p in latest_posts(state.cat, limit=limit):
        if not p.get("image_path"):
            continue
        path = state.ws.resolve(p["image_path"])
        if path.exists():
            tags = p.get("tags") or []
            tags = tags.split() if isinstance(tags, str) else list(tags)
            items.append((str(path), f"#{p['id']} " + " ".join(tags)))
    return items


def _client(state: StudioState, source: str, base_url: str):
    from gaudi_engine.booru.client import DanbooruClient
    from gaudi_engine.demo import demo_settings

    if source == DEMO:
        if not state.demo_url:
            raise GaudiError("no demo booru in this studio: start it with `python launch.py --demo`")
        return DanbooruClient(demo_settings(state.demo_url))
    if not base_url.strip():
        raise GaudiError("give the booru's URL (e.g. https://danbooru.donmai.us)")
    return DanbooruClient(DanbooruSettings.from_env(base_url=base_url.strip()))


def build(state: StudioState) -> None:
    sources = ([DEMO] if state.demo_url else []) + [DANBOORU, FOLDER]
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            source = gr.Radio(sources, value=sources[0], label="Source", elem_id="sync-source")
            base_url = gr.Textbox(os.environ.get("DANBOORU_BASE_URL", "https://danbooru.donmai.us"),
                                  label="Booru URL", visible=sources[0] == DANBOORU)
            creds = gr.Markdown(_credentials_line(), visible=sources[0] == DANBOORU)
            folder = gr.Textbox(label="Folder (images with NAME.txt tag files)", visible=False)
            query = gr.Textbox(label="Query (tags)", placeholder="e.g. 1girl solo")
            with gr.Row():
                rating = gr.Dropdown(RATINGS, value="all", label="Rating")
                limit = gr.Number(200, label="Limit (posts)", precision=0, minimum=1)
                workers = gr.Number(4, label="Image workers", precision=0, minimum=1, maximum=32)
            with gr.Row():
                start = gr.Button("Start sync", variant="primary", elem_id="sync-start")
                stop = gr.Button("Stop", variant="stop", elem_id="sync-stop")
            with gr.Row():
                tags_btn = gr.Button("Sync tags", size="sm")
                wiki_btn = gr.Button("Sync wiki", size="sm")
        with gr.Column(scale=2):
            bar = gr.HTML(progress_html(0, "idle"), elem_id="sync-progress")
            status = gr.Markdown("", elem_id="sync-status")
            counts = gr.Dataframe(lambda: counts_table(state), label="Catalogue", interactive=False,
                                  elem_id="sync-counts")
            gallery = gr.Gallery(lambda: gallery_items(state), label="Latest posts (general tags)", columns=6,
                                 height=520, object_fit="contain", elem_id="sync-gallery")
    seen = gr.State("")  # last counts shown to this page: refresh the grid only when they change
    # the task this page started or saw running: only its outcome is this page's to show (a new
    # visitor is not greeted by the last visitor's "sync failed")
    watched = gr.State(None)
    timer = gr.Timer(1.0)

    def on_source(src: str):
        return (gr.update(visible=src == DANBOORU), gr.update(visible=src == DANBOORU),
                gr.update(visible=src == FOLDER))

    source.change(on_source, source, [base_url, creds, folder])

    @guard
    def on_start(src, url, folder_path, q, r, lim, nworkers):
        from gaudi_engine.booru.media import fetch_images, summary_line as media_summary

        lim = int(lim) if lim else None
        nworkers = max(1, int(nworkers or 4))
        if src == FOLDER:
            from gaudi_engine.booru.folder_import import import_folder

            if not folder_path or not os.path.isdir(folder_path):
                raise GaudiError(f"not a folder: {folder_path or '(empty)'}")
            from gaudi_engine.booru import folder_import

            state.task.start("import folder", lambda: folder_import.summary_line(
                import_folder(state.ws, state.cat, folder_path)))
        else:
            from gaudi_engine.booru.sync import sync_posts

            client = _client(state, src, url)

            def run():
                posts = sync_posts(state.ws, state.cat, client, tags=q.strip(), rating=r, limit=lim)
                media = fetch_images(state.ws, state.cat, client, max_workers=nworkers)
                return (f"{posts['stored']} posts stored ({posts['pages']} pages, {posts['deleted']} deleted, "
                        f"{posts['banned']} banned); {media_summary(media)}")

            state.task.start(f"sync from {src}", run)
        gr.Info(f"{state.task.name} started")
        return state.task.started

    def on_stop():
        if state.task.stop():
            gr.Info(f"stopping {state.task.name}…")
        else:
            gr.Info("nothing is running")

    @guard
    def on_meta(what: str, src: str, url: str):
        from gaudi_engine.booru import sync as sync_mod

        if src == FOLDER:
            raise GaudiError("tags and wiki come from a booru: pick the demo booru or Danbooru as source")
        client = _client(state, src, url)
        fn = sync_mod.sync_tags if what == "tags" else sync_mod.sync_wiki
        state.task.start(f"sync {what}", lambda: ", ".join(f"{k} {v}" for k, v in fn(state.cat, client).items()))
        return state.task.started

    def tick(last: str, mine):
        t = state.task
        # `watched` is written back only when a running task is adopted: a tick queued before this
        # page's click returned still holds the old value, and writing that back would erase the
        # click's (a fast task then ends unseen and its line never shows)
        adopt = t.status == "running" and mine != t.started
        if t.status == "running":
            mine = t.started
        shown = t.status if t.status == "running" or (mine is not None and mine == t.started) else "idle"
        view = t.progress()
        text = (f"{t.name}: {view.stage} {view.done}/{view.total or '?'}" if shown == "running"
                else t.name if shown != "idle" else "idle")
        bar_html = progress_html(view.fraction if shown != "idle" else 0, text, shown)
        msg = status_line(t.name, shown, t.message, t.result)
        table = counts_table(state)
        key = table.to_json()
        watched_out = mine if adopt else gr.skip()
        if key == last:
            return bar_html, msg, gr.skip(), gr.skip(), last, watched_out
        return bar_html, msg, table, gallery_items(state), key, watched_out

    start.click(on_start, [source, base_url, folder, query, rating, limit, workers], watched)
    stop.click(on_stop, None, None)
    tags_btn.click(lambda s, u: on_meta("tags", s, u), [source, base_url], watched)
    wiki_btn.click(lambda s, u: on_meta("wiki", s, u), [source, base_url], watched)
    timer.tick(tick, [seen, watched], [bar, status, counts, gallery, seen, watched], show_progress="hidden")


def status_line(name: str, status: str, message: str, result) -> str:
    """The task's line in full (a done task's own summary, not the 200-character cut of it)."""
    if status == "done":
        full = result if isinstance(result, str) and result else message
        return f"**{name}** done. {full}"
    return {"running": f"**{name}** running…", "failed": f"⚠️ **{name} failed:** {message}",
            "cancelled": f"**{name}** stopped."}.get(status, "")
