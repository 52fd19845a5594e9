"""Descriptions tab: the general tags with their descriptions (several per tag, one per line).
Every change is written to the catalogue at once."""
from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from gaudi_engine.errors import GaudiError

from ..state import StudioState, current_tab, guard

ORDERS = {"post count": "post_count", "tag": "tag", "descriptions": "n_descriptions"}
COLUMNS = ["tag", "post_count", "n_descriptions", "source"]


def tags_frame(state: StudioState, search: str = "", order: str = "post count") -> pd.DataFrame:
    from gaudi_engine.text.descriptions import general_tags_table

    rows = general_tags_table(state.cat, search=search or "", order=ORDERS.get(order, "post_count"))
    return pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], columns=COLUMNS)


def _descriptions_of(state: StudioState, tag: str) -> list[str]:
    from gaudi_engine.text.descriptions import load_descriptions

    return load_descriptions(state.cat).get(tag, [])


def _sources_of(state: StudioState, tag: str) -> set[str]:
    from gaudi_engine.text.descriptions import general_tags_table

    rows = [r for r in general_tags_table(state.cat, search=tag) if r["tag"] == tag]
    return set((rows[0]["source"] or "").split(",")) if rows else set()


def build(state: StudioState) -> None:
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                search = gr.Textbox(label="Search tags", placeholder="type part of a tag", scale=3,
                                    elem_id="desc-search")
                order = gr.Dropdown(list(ORDERS), value="post count", label="Sort by", scale=1)
            table = gr.Dataframe(lambda: tags_frame(state), label="General tags (click a row to edit)",
                                 interactive=False, max_height=520, elem_id="desc-table")
        with gr.Column(scale=2):
            tag = gr.Textbox(label="Tag", elem_id="desc-tag")
            texts = gr.Textbox(label="Descriptions (one per line)", lines=6, elem_id="desc-texts")
            with gr.Row():
                save = gr.Button("Save", variant="primary", elem_id="desc-save")
                suggest = gr.Button("Suggest with LLM", elem_id="desc-suggest")
            replace = gr.Checkbox(False, label="Replace my descriptions too (Suggest / Fill from wiki keep "
                                  "user-written ones unless this is ticked)", elem_id="desc-replace")
            status = gr.Markdown("", elem_id="desc-status")
            with gr.Accordion("Bulk", open=True):
                with gr.Row():
                    wiki = gr.Button("Fill from wiki", size="sm", elem_id="desc-wiki")
                    export = gr.Button("Export JSON", size="sm")
                upload = gr.File(label="Import JSON {tag: [description, ...]}", file_types=[".json"],
                                 type="filepath")
                download = gr.File(label="Exported", interactive=False, visible=False)

    def refresh(s, o):
        return tags_frame(state, s, o)

    search.change(refresh, [search, order], table, show_progress="hidden")
    current_tab().select(refresh, [search, order], table)  # tags arrive with syncs
    order.change(refresh, [search, order], table)

    @guard
    def pick(evt: gr.SelectData, df: pd.DataFrame):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        name = str(df.iloc[row]["tag"])
        return name, "\n".join(_descriptions_of(state, name)), ""

    table.select(pick, table, [tag, texts, status])

    @guard
    def on_tag_typed(name: str):
        return "\n".join(_descriptions_of(state, name.strip())) if name.strip() else gr.skip()

    tag.submit(on_tag_typed, tag, texts)

    @guard
    def on_save(name: str, body: str, s: str, o: str):
        from gaudi_engine.text.descriptions import set_descriptions

        name = name.strip()
        if not name:
            raise GaudiError("pick a tag first (click a row or type its name)")
        lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
        set_descriptions(state.cat, name, lines, source="user")
        return f"Saved {len(lines)} description(s) for **{name}**.", tags_frame(state, s, o)

    save.click(on_save, [tag, texts, search, order], [status, table])

    @guard
    def on_wiki(s, o, rep):
        from gaudi_engine.text.descriptions import fill_from_wiki

        stats = fill_from_wiki(state.cat, replace_user=bool(rep))
        return wiki_message(stats), tags_frame(state, s, o)

    wiki.click(on_wiki, [search, order, replace], [status, table])

    @guard
    def on_export():
        from gaudi_engine.text.descriptions import export_json

        out = state.ws.runs_dir / "_studio" / "exports" / f"tag_descriptions_{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        export_json(state.cat, out)
        return gr.update(value=str(out), visible=True), f"Exported to `{state.ws.rel(out)}`."

    export.click(on_export, None, [download, status])

    @guard
    def on_import(path, s, o):
        from gaudi_engine.text.descriptions import import_json

        if not path:
            return gr.skip(), gr.skip()
        stats = import_json(state.cat, path)
        return f"Imported: {_stats(stats)}.", tags_frame(state, s, o)

    upload.upload(on_import, [upload, search, order], [status, table])

    @guard
    def on_suggest(name: str, s: str, o: str, rep: bool):
        try:
            from gaudi_engine.text.suggest import suggest_descriptions
        except ImportError:
            raise GaudiError("LLM suggestions are not available in this installation") from None
        name = name.strip()
        if not name:
            raise GaudiError("pick a tag first (click a row or type its name)")
        # provider: OpenAI-compatible when OPENAI_API_KEY is set, else the offline heuristic
        had_user = bool(rep) and "user" in _sources_of(state, name)
        out = suggest_descriptions(state.cat, [name], None, replace_user=bool(rep))
        return "\n".join(_descriptions_of(state, name)), suggest_message(name, out, had_user), \
            tags_frame(state, s, o)

    suggest.click(on_suggest, [tag, search, order, replace], [texts, status, table])


REPLACE_HINT = "tick **Replace my descriptions too** and click again to replace them"


def wiki_message(stats: dict) -> str:
    """What "Fill from wiki" did, and what to do when it could do nothing."""
    pages, tags, added = stats.get("pages", 0), stats.get("tags", 0), stats.get("added", 0)
    kept, replaced = stats.get("skipped_user", 0), stats.get("replaced_user", 0)
    if not pages:
        return ("Nothing filled: the catalogue has no wiki pages of these tags yet. Run **Sync wiki** in "
                "the Sync tab, then *Fill from wiki* again.")
    if not tags:
        return (f"Nothing changed: all {kept} tag(s) with a wiki page have your own descriptions, which "
                f"are kept; {REPLACE_HINT} with the wiki's first sentences.")
    msg = f"Filled {tags} tag(s) from {pages} wiki page(s): {added} new description(s)"
    if not added:
        msg += " (the wiki's text was already in)"
    if replaced:
        msg += f"; your descriptions of {replaced} tag(s) replaced"
    if kept:
        msg += f"; {kept} tag(s) kept your descriptions ({REPLACE_HINT})"
    return msg + "."


def suggest_message(name: str, out: dict, replaced: bool) -> str:
    """What "Suggest with LLM" did for one tag."""
    who = out.get("provider") or "LLM"
    if out.get("model"):
        who += f" ({out['model']})"
    got = out.get("stored", {}).get(name, [])
    if name in out.get("skipped_user", []):
        msg = f"Nothing changed: **{name}** has your own descriptions, which are kept; {REPLACE_HINT}."
    elif name in out.get("no_wiki", []):
        msg = (f"No suggestion for **{name}**: it has no wiki page to work from (run **Sync wiki** in "
               f"the Sync tab).")
    elif name in out.get("failed", {}):
        msg = f"{who} failed for **{name}**: {out['failed'][name]}"
    else:
        msg = f"{who} suggested {len(got)} description(s) for **{name}**" + \
            (" and replaced yours." if replaced else ".")
    if out.get("note"):
        msg += f"  \n{out['note']}"
    return msg


def _stats(stats) -> str:
    if isinstance(stats, dict):
        return ", ".join(f"{k} {v}" for k, v in stats.items())
    return str(stats)
