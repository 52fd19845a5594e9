"""Tag text, one set of rules for every place that reads it: sidecar `NAME.txt` files (import-folder,
batch infer), manifests' `tags` column, and tags typed on the command line or in the studio."""
from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field

RATINGS = {"g": "g", "general": "g", "s": "s", "sensitive": "s", "q": "q", "questionable": "q",
           "e": "e", "explicit": "e"}


_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")  # control characters that are not whitespace


def normalise_tag(tag: str) -> str:
    """Danbooru form: trimmed, lowercase, runs of whitespace -> one underscore, control characters
    (a binary file read as text) dropped."""
    return re.sub(r"\s+", "_", _CONTROL.sub("", tag).strip().lower())


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


# Tag files come from every editor: UTF-8 first (a BOM is dropped), UTF-16 when it says so with a
# BOM, else Windows' cp1252 (Notepad's old default), else latin-1, which reads any byte.
FALLBACK_ENCODINGS = ("cp1252", "latin-1")


def decode_tag_text(data: bytes) -> tuple[str, str]:
    """Tag-file bytes -> (text, the encoding that read them). Never raises."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace"), "utf-8"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace"), "utf-16"
    for encoding in ("utf-8", *FALLBACK_ENCODINGS):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any byte")  # pragma: no cover


@dataclass
class SidecarReader:
    """Reads sidecar tag files for one run and remembers the ones that were not UTF-8 (or could not
    be read), so the run says so once (`note`) instead of crashing or warning per tag."""
    fallbacks: list[tuple[str, str]] = field(default_factory=list)  # (file name, encoding used)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file name, why)

    def read(self, path: str | os.PathLike, name: str | None = None) -> tuple[list[str], str | None]:
        """(tags, rating) of a sidecar file; ([], None) when it cannot be read (remembered)."""
        from .filenames import shown

        name = name or shown(os.path.basename(path))
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            self.unreadable.append((name, exc.strerror or type(exc).__name__))
            return [], None
        text, encoding = decode_tag_text(data)
        if encoding in FALLBACK_ENCODINGS:
            self.fallbacks.append((name, encoding))
        return parse_sidecar(text)

    def note(self) -> str | None:
        """One line about the tag files that were not UTF-8 or not readable, or None."""
        parts = []
        if self.fallbacks:
            names = [n for n, _ in self.fallbacks]
            encodings = "/".join(dict.fromkeys(e for _, e in self.fallbacks))
            parts.append(f"{len(names)} tag file(s) not UTF-8, read as {encodings}: {_some(names)}")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} tag file(s) unreadable, used without tags: "
                         + _some([f"{n} ({why})" for n, why in self.unreadable]))
        return "; ".join(parts) or None


def _some(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
