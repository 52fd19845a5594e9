"""What every tab shares: the workspace, the catalogue (this process owns it), the job manager,
the in-process catalogue task, the demo booru; and `guard`, which turns an engine exception into
a visible message (A1111's call_queue idea) instead of a silent spinner."""
from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from gaudi_engine.catalogue import Catalogue, open_catalogue
from gaudi_engine.errors import GaudiError
from gaudi_engine.jobs import CatalogueTask, JobManager
from gaudi_engine.workspace import Workspace

from .uploads import max_upload_bytes

log = logging.getLogger("gaudi.studio")


@dataclass
class StudioState:
    ws: Workspace
    cat: Catalogue
    jobs: JobManager
    task: CatalogueTask
    demo_booru: Any = None          # a running LocalBooru in demo mode
    predictors: dict = field(default_factory=dict)  # (ckpt paths, mtimes) -> Predictor
    predict_lock: threading.Lock = field(default_factory=threading.Lock)
    max_upload_bytes: int = field(default_factory=max_upload_bytes)  # Gradio's max_file_size and the handlers'

    @classmethod
    def open(cls, ws: Workspace, demo_booru: Any = None, max_upload: int | None = None) -> "StudioState":
        ws.ensure()
        cat = open_catalogue(ws.catalogue_path)
        return cls(ws=ws, cat=cat, jobs=JobManager(ws), task=CatalogueTask(ws), demo_booru=demo_booru,
                   max_upload_bytes=max_upload or max_upload_bytes())

    @property
    def demo_url(self) -> str | None:
        return self.demo_booru.url if self.demo_booru is not None else None


def error_message(exc: BaseException) -> str:
    if isinstance(exc, GaudiError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def guard(fn: Callable) -> Callable:
    """Wrap an event handler: engine errors become a `gr.Error` toast with one line (Gradio
    would print each one's traceback to the console: expected errors are logged as one line)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except GaudiError as exc:  # the user's to fix: one line in the log, no traceback
            log.info("%s: %s", getattr(fn, "__name__", fn), error_message(exc))
            raise gr.Error(error_message(exc), print_exception=False) from None
        except Exception as exc:  # unexpected: the traceback once, in the server log
            log.exception("studio handler %s failed", getattr(fn, "__name__", fn))
            raise gr.Error(error_message(exc), print_exception=False) from None

    return wrapper


def progress_html(fraction: float, text: str = "", status: str = "") -> str:
    """A plain HTML progress bar (gr.Progress only lives inside one event; ours outlive the page)."""
    pct = max(0.0, min(1.0, float(fraction or 0))) * 100
    cls = f"gaudi-bar {status}".strip()
    safe = (text or "").replace("&", "&amp;").replace("<", "&lt;")
    return (f'<div class="{cls}" data-pct="{pct:.0f}"><div class="gaudi-bar-fill" style="width:{pct:.1f}%"></div>'
            f'<span class="gaudi-bar-text">{pct:.0f}% {safe}</span></div>')


def current_tab():
    """The Tab being built (a tab's `build` runs inside `with gr.Tab(...)`), for its `.select`."""
    from gradio.context import Context

    return Context.block
