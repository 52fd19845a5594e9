"""Tag text, one set of rules for every place that reads it: sidecar `NAME.txt` files (import-folder,
batch infer), manifests' `tags` column, and tags typed on the command line or in the studio."""
from __future__ import annotations

import re
import urllib.parse

RATINGS = {"g": "g", "general": "g", "s": "s", "sensitive": "s", "q": "q", "questionable": "q",
           "e": "e", "explicit": "e"}


def normalise_tag(tag: str) -> str:
    """Danbooru form: trimmed, lowercase, runs of whitespace -> one underscore."""
    return re.sub(r"\s+", "_", tag.strip().lower())


def parse_sidecar(text: str) -> tuple[list[str], str | None]:
    """Sidecar text (comma- or line-separated; tags may contain spaces) -> (tags in order, without
    duplicates; the rating of a `rating:x` entry, or None)."""
    tags: dict[str, None] = {}
    rating = None
    for piece in re.split(r"[,\n]", text):
        tag = normalise_tag(piece)
        if not tag:
            continue
        if tag.startswith("rating:"):
            rating = RATINGS.get(tag.split(":", 1)[1], rating)
            continue
        tags[tag] = None
    return list(tags), rating


def split_tags(text: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """A tag list as typed or stored: 'a b' (space-separated, as in manifests and `--tags`) or
    'long hair, 1girl' (comma-separated, as in sidecars); a list is taken as is. Normalised,
    duplicates dropped, order kept."""
    if not text:
        return []
    if isinstance(text, (list, tuple)):
        parts = [str(t) for t in text]
    elif "," in text or "\n" in text:
        parts = re.split(r"[,\n]", text)
    else:
        parts = text.split()
    return list(dict.fromkeys(t for t in map(normalise_tag, parts) if t))


def tag_filename(tag: str) -> str:
    """Tags become file names (pseudo-masks, ground truth, infer's masks); anything unsafe for a
    file name is %-quoted (`/` `:` ...)."""
    return urllib.parse.quote(tag, safe="!#$&'()+,;=@[]^_`{}~- ") + ".png"
