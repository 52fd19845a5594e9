"""Small file writes that must never be seen half-done (a reader, another shard or a SIGKILL)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Write `text` to a unique temp file beside `path`, then rename it onto `path` (atomic on one
    filesystem, so concurrent writers — e.g. shards — each replace it whole). `fsync` also makes
    the content durable before the rename (for resume files that must survive a power cut)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
