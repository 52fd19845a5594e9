"""LLM-suggested tag descriptions: 1-3 short visual descriptions per tag, written from its wiki
text (structured output `{"descriptions": [...]}`) and stored with source `llm` through
`descriptions.add_descriptions`, which never touches a tag that has the user's own descriptions.
The offline provider uses the wiki's first sentence(s), cleaned.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import GaudiError
from ..progress import Progress
from .llm import BadAnswer, FatalProviderError, LLMRequest, Provider, add_usage, ask, make_provider

MAX_CHARS = 300
SYSTEM_PROMPT = (
    "You write short visual descriptions of Danbooru general tags for an image-text model. "
    "From the tag's wiki text, write 1 to 3 descriptions, each one plain sentence under 25 words "
    "saying what the tag looks like in a picture (shapes, colours, parts, where it is on a "
    "character). No tag names with underscores, no history, no usage rules."
)
SCHEMA = {
    "type": "object",
    "properties": {"descriptions": {"type": "array", "items": {"type": "string"},
                                    "minItems": 1, "maxItems": 3}},
    "required": ["descriptions"],
    "additionalProperties": False,
}


def clean_sentence(text: str, max_chars: int = MAX_CHARS) -> str:
    """One tidy description: collapsed whitespace, no stray quotes/bullets, cut at a word
    boundary, ending with a full stop."""
    text = " ".join(text.split()).strip(" \"'*-•")
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    if text and text[-1] not in ".!?…":
        text += "."
    return text[:1].upper() + text[1:]


def offline_descriptions(plain: str) -> list[str]:
    from .dtext import first_sentences

    text = clean_sentence(first_sentences(plain, 2)) if plain.strip() else ""
    return [text] if text else []


def validate_descriptions(data: Any) -> list[str]:
    if not isinstance(data, dict) or not isinstance(data.get("descriptions"), list):
        raise BadAnswer('the answer is not an object with a "descriptions" list')
    out: list[str] = []
    for d in data["descriptions"]:
        if not isinstance(d, str):
            raise BadAnswer("a description is not a string")
        d = clean_sentence(d)
        if d and d not in out:
            out.append(d)
    if not 1 <= len(out) <= 3:
        raise BadAnswer(f"expected 1 to 3 descriptions, got {len(out)}")
    return out


def describe_request(tag: str, plain: str) -> LLMRequest:
    return LLMRequest(
        system=SYSTEM_PROMPT, user=f"Tag: {tag}\nWiki: {plain[:4000]}", schema=SCHEMA,
        schema_name="tag_descriptions", validate=validate_descriptions,
        offline=lambda: {"descriptions": offline_descriptions(plain)})


def _wiki_rows(cat, tags: list[str] | None) -> dict[str, str]:
    """tag -> wiki plain text, for general tags (or tags only known from post_tags) with a page.
    A page without prose (only headings and link lists) counts as empty."""
    from .dtext import dtext_to_plain, first_sentences

    rows = cat.fetchall(
        "SELECT w.title, w.body, w.plain FROM wiki_pages w LEFT JOIN tags t ON t.name = w.title "
        "WHERE NOT coalesce(w.is_deleted, FALSE) AND coalesce(t.category, 0) = 0 ORDER BY w.title")
    wanted = set(tags) if tags is not None else None
    out = {}
    for title, body, plain in rows:
        if wanted is None or title in wanted:
            text = (plain or dtext_to_plain(body or "")).strip()
            out[title] = text if first_sentences(text, 1) else ""
    return out


def suggest_descriptions(cat, tags: list[str] | None = None, provider: str | Provider | None = None,
                         model: str | None = None, concurrency: int = 4, replace_user: bool = False) -> dict:
    """Suggest and store descriptions. `tags=None` means every general tag with a wiki page and no
    descriptions of the user's or an LLM's yet. A tag with user descriptions is skipped unless
    `replace_user` (then the suggestions replace them). Returns a summary the CLI and the studio show:
    `{provider, model, note, stored: {tag: [texts]}, skipped_user, no_wiki, failed: {tag: msg},
    usage}`."""
    from . import descriptions as store

    if isinstance(provider, Provider):
        prov, note = provider, None
    else:
        prov, note = make_provider(provider, model)
    if tags is not None:
        tags = list(dict.fromkeys(t.strip().replace(" ", "_") for t in tags if t.strip()))
        if not tags:
            raise GaudiError("no tags given")
    owners = dict(cat.fetchall(
        "SELECT tag, string_agg(DISTINCT source, ',') FROM tag_descriptions GROUP BY tag"))
    wiki = _wiki_rows(cat, tags)
    if tags is not None:
        known = {r[0] for r in cat.fetchall("SELECT name FROM tags UNION SELECT DISTINCT tag FROM post_tags")}
        unknown = [t for t in tags if t not in known and t not in wiki]
        if unknown:
            raise GaudiError(f"unknown tag(s): {', '.join(unknown[:10])}")
        todo = tags
    else:
        todo = [t for t in wiki if not ({"user", "llm"} & set((owners.get(t) or "").split(",")))]
    skipped_user = [] if replace_user else [t for t in todo if "user" in (owners.get(t) or "").split(",")]
    no_wiki = [t for t in todo if t not in skipped_user and not wiki.get(t)]
    work = [t for t in todo if t not in skipped_user and wiki.get(t)]

    usage: dict[str, int] = {}
    answers: dict[str, list[str]] = {}
    failed: dict[str, str] = {}

    def one(tag: str):
        try:
            return tag, ask(prov, describe_request(tag, wiki[tag])), None
        except FatalProviderError:
            raise
        except (BadAnswer, GaudiError) as exc:
            return tag, None, exc

    with Progress("suggest-descriptions", total=len(work), unit="tag") as bar, \
            ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for tag, reply, exc in pool.map(one, work):
            if reply is None:
                failed[tag] = str(exc)
                add_usage(usage, getattr(exc, "usage", None))
            else:
                answers[tag] = reply.value
                add_usage(usage, reply.usage)
            bar.update(1)

    stored: dict[str, list[str]] = {}
    for tag, texts in answers.items():  # written here, on the caller's thread and cursor
        store.add_descriptions(cat, tag, texts, source="llm", replace_user=replace_user)
        stored[tag] = texts
    return {"provider": prov.name, "model": prov.model, "note": note, "stored": stored,
            "skipped_user": skipped_user, "no_wiki": no_wiki, "failed": failed, "usage": usage}


def summary_line(summary: dict) -> str:
    line = (f"descriptions suggest: {len(summary['stored'])} tags got descriptions "
            f"({summary['provider']}/{summary['model']}), {len(summary['skipped_user'])} skipped "
            f"(user's own), {len(summary['no_wiki'])} without wiki text, {len(summary['failed'])} failed; "
            f"{summary['usage'].get('total_tokens', 0):,} tokens used")
    if summary["failed"]:
        first = next(iter(summary["failed"].items()))
        line += f" (first failure: {first[0]}: {first[1]})"
    return line
