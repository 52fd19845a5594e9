"""Reading a descriptions file, `{"tag": ["description", ...], ...}` (a bare string is one
description): the one reader behind `gaudi descriptions import` and every `--tag-desc`. Anything
else — not UTF-8, not JSON, nested too deep, the wrong shape — is a GaudiError of one line."""
from __future__ import annotations

import json
import os
from pathlib import Path


def read_descriptions_json(path: str | os.PathLike) -> dict[str, list[str]]:
    """The file's `{tag: [text, ...]}` as written (keys and texts untouched; the caller cleans)."""
    from ..errors import GaudiError

    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a BOM, as Windows editors write it, is fine
    except FileNotFoundError:
        raise GaudiError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise GaudiError(f"{path} is a folder, not a descriptions file") from None
    except OSError as exc:
        raise GaudiError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise GaudiError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GaudiError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise GaudiError(f"{path} is not a descriptions file (JSON nested too deep)") from None
    if not isinstance(data, dict):
        raise GaudiError(f"{path}: expected a JSON object {{tag: [description, ...]}}")
    out: dict[str, list[str]] = {}
    for tag, value in data.items():
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise GaudiError(f"{path}: the descriptions of {tag[:60]!r} must be a list of strings (or one string)")
        out[tag] = texts
    return out
