"""Danbooru DText -> plain text, and a short default description from it.

DText is Danbooru's markup: `[[tag]]`/`[[tag|label]]` wiki links, `{{tag search}}`, `h4.` headings,
`* ` lists, `"text":url` links, `[b]`-style tags, `!post #123` embeds. Plain text keeps the words a
reader sees: links become their labels, markup disappears, headings and list items stay on their
own lines (lists as "- item") so `first_sentences` can pick the opening prose.
"""
from __future__ import annotations

import re

_WIKI_LINK = re.compile(r"\[\[([^\]|]+?)(?:\|([^\]]*))?\]\]")
_SEARCH_LINK = re.compile(r"\{\{([^}]*)\}\}")
_QUOTED_LINK = re.compile(r'"([^"\n]+)":(?:\[[^\]\s]+\]|(?:https?://|/)(?:[^\s<>()\[\]"]|\([^\s<>()]*\))+)')
_ANGLE_URL = re.compile(r"<(https?://[^>\s|]+)(?:\|([^>]*))?>")
_URL_TAG = re.compile(r"\[url(?:=([^\]]+))?\](.*?)\[/url\]", re.I | re.S)
_EMBED = re.compile(r"^!(?:post|asset) #\d+.*$", re.M)
_TAG = re.compile(r"\[/?(?:b|i|u|s|tn|spoilers?|code|nodtext|quote|expand|table|thead|tbody|tr|td|th|"
                  r"col|colgroup|br|hr|center|sup|sub|color|section|ruby|rb|rt)(?:[ =][^\]]*)?\]",
                  re.I)
_HEADING = re.compile(r"^\s*h[1-6](?:#[\w-]+)?\.\s*(.*)$", re.I)
_LIST = re.compile(r"^\s*\*+\s+(.*)$")
_QUALIFIER = re.compile(r"\s*\([^)]*\)\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def _link_label(m: re.Match) -> str:
    title, label = m.group(1).strip(), m.group(2)
    if label is None:
        return title.replace("_", " ")
    if label == "":  # `[[tag_(qualifier)|]]`: Danbooru shows the title without its qualifier
        return _QUALIFIER.sub("", title.replace("_", " "))
    return label.strip()


def _quoted_label(m: re.Match) -> str:
    # a sentence may end right after a link: give back the punctuation the URL swallowed
    url = m.group(0)[len(m.group(1)) + 3:]
    trailing = url[len(url.rstrip(".,;:!?")):] if not url.startswith("[") else ""
    return m.group(1) + trailing


def dtext_to_plain(body: str | None) -> str:
    """Plain text of a DText body: paragraphs separated by a blank line."""
    if not body:
        return ""
    text = body.replace("\r\n", "\n").replace("\r", "\n")
    text = _EMBED.sub("", text)
    text = _URL_TAG.sub(lambda m: m.group(2) or m.group(1) or "", text)
    text = _WIKI_LINK.sub(_link_label, text)
    text = _SEARCH_LINK.sub(lambda m: m.group(1).strip().replace("_", " "), text)
    text = _QUOTED_LINK.sub(_quoted_label, text)
    text = _ANGLE_URL.sub(lambda m: m.group(2) or m.group(1), text)
    text = _TAG.sub("", text)
    out: list[str] = []
    for line in text.split("\n"):
        heading = _HEADING.match(line)
        item = _LIST.match(line)
        if heading:
            line = heading.group(1)
            if out and out[-1] != "":
                out.append("")  # a heading starts a paragraph of its own
            out.extend([line.strip(), ""])
            continue
        if item:
            line = "- " + item.group(1)
        line = re.sub(r"[ \t]+", " ", line).strip()
        if line or (out and out[-1] != ""):
            out.append(line)
    return "\n".join(out).strip()


def _is_prose(paragraph: str) -> bool:
    first = paragraph.splitlines()[0] if paragraph else ""
    if not first or first.startswith("- "):
        return False
    # a lone heading ("See also") has no sentence punctuation and is short
    return bool(re.search(r"[.!?:]", paragraph)) or len(paragraph.split()) > 8


def first_sentences(text: str, n: int = 2) -> str:
    """The first `n` sentences of the first prose paragraph (skipping headings and lists)."""
    for para in re.split(r"\n\s*\n", text or ""):
        para = para.strip()
        if not _is_prose(para):
            continue
        prose = " ".join(l for l in para.splitlines() if not l.startswith("- "))
        sentences = _SENTENCE_END.split(prose)
        return " ".join(s.strip() for s in sentences[:n]).strip()
    return ""
