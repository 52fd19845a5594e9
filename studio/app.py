"""The studio's gr.Blocks: five tabs over the engine, and how it is served (files only from the
workspace and assets/)."""
from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from .state import StudioState
from .tabs import descriptions, playground, pseudo_masks, sync, train

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TABS = [("Sync", sync), ("Descriptions", descriptions), ("Train", train),
        ("Pseudo-masks", pseudo_masks), ("Playground", playground)]

# ← / → step through the pseudo-mask browser when no text field has the focus.
KEYBOARD_JS = """
<script>
document.addEventListener('keydown', (e) => {
  const t = e.target; if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
  const id = e.key === 'ArrowRight' ? 'pm-next' : e.key === 'ArrowLeft' ? 'pm-prev' : null;
  if (!id) return;
  const b = document.getElementById(id);
  if (b && b.offsetParent !== null) { b.click(); e.preventDefault(); }
});
</script>
"""


def build_app(state: StudioState) -> gr.Blocks:
    with gr.Blocks(title="GaUDI Studio", analytics_enabled=False) as app:
        demo = " · demo workspace" if state.demo_booru is not None else ""
        gr.Markdown(f"## GaUDI Studio <small>`{state.ws.root}`{demo}</small>", elem_id="gaudi-header")
        with gr.Tabs():
            for label, module in TABS:
                with gr.Tab(label, id=label.lower()):
                    module.build(state)
    return app


def ensure_samples(n: int = 4) -> list[Path]:
    """Playground samples are rendered by SynthBooru on first run (no binaries in the repo)."""
    out = ASSETS / "samples"
    have = sorted(out.glob("*.png"))
    if len(have) >= n:
        return have
    try:
        from gaudi_engine import synth
    except ImportError:
        return have
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, tags, _ = synth.render_scene(1000 + i, (192, 192))
        img.save(out / f"sample_{i}.png")
        (out / f"sample_{i}.txt").write_text(", ".join(tags), encoding="utf-8")
    return sorted(out.glob("*.png"))


def log_to_console() -> None:
    """The studio's own log (gaudi.studio: a user's error as one line, an unexpected one with its
    traceback) on the console, at info level."""
    log = logging.getLogger("gaudi.studio")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def launch(state: StudioState, host: str = "127.0.0.1", port: int = 7860,
           auth: tuple[str, str] | None = None, block: bool = True):
    log_to_console()
    app = build_app(state)
    app.queue(default_concurrency_limit=4)
    css = (ASSETS / "studio.css").read_text(encoding="utf-8") if (ASSETS / "studio.css").exists() else None
    return app.launch(
        server_name=host, server_port=port, auth=auth, share=False, inbrowser=False,
        allowed_paths=[str(state.ws.root), str(ASSETS)],
        # the catalogue is in the workspace but nothing to serve
        blocked_paths=[str(state.ws.catalogue_path), str(state.ws.catalogue_path) + ".wal"],
        css=css, head=KEYBOARD_JS, prevent_thread_lock=not block, show_error=True,
        max_file_size=state.max_upload_bytes,  # larger uploads are refused before they are sent
    )
