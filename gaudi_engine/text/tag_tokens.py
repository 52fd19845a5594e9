"""Tag -> tokens: map each general tag that has a wiki page to a few pieces of a SentencePiece vocab.

Input is a list of tag objects in Danbooru's own field names (what
`/tags.json?only=id,name,category,post_count,is_deprecated,wiki_page` returns; the wiki page is
nested under `wiki_page` with `title`, `body` (DText), `other_names`, `is_deleted`, or null), from
a JSON file or exported from the catalogue in the same shape. Per tag, a shortlist of vocab pieces
is the JSON schema's `enum`: the model can only answer with pieces that exist, and ids are then
looked up locally. Output folder: see `jsonl_store.JobStore` (resumable, line-atomic).
"""
from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from ..errors import GaudiError
from ..progress import Progress
from .jsonl_store import JobStore
from .llm import BadAnswer, FatalProviderError, LLMRequest, Provider, add_usage, ask
from .shortlist import Shortlist, ShortlistBuilder, norm_piece
from .spm import Vocab

SYSTEM_PROMPT = (
    "You map a Danbooru general tag to pieces of a SentencePiece vocabulary for a text model. "
    "Choose the 1 to {max_tokens} pieces from the allowed list that together best name what the "
    "tag shows; prefer pieces that spell the tag itself, and use the wiki text to understand its "
    "meaning. Answer only with pieces from the allowed list."
)


# -- input ----------------------------------------------------------------------------------------

def load_tags_json(path: str | Path) -> list[dict]:
    """Read a tag list (a JSON array, or `{"tags": [...]}`)."""
    path = Path(path)
    if not path.is_file():
        raise GaudiError(f"tags file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GaudiError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("tags"), list):
        data = data["tags"]
    if not isinstance(data, list) or not all(isinstance(t, dict) and t.get("name") for t in data):
        raise GaudiError(f"{path} must hold a list of tag objects with a `name` "
                         f"(as /tags.json?only=id,name,category,post_count,is_deprecated,wiki_page)")
    return data


def tags_from_catalogue(cat) -> list[dict]:
    """Every catalogue tag in the /tags.json shape, its wiki page nested (or null)."""
    rows = cat.fetchall(
        "SELECT t.name, t.category, t.post_count, t.is_deprecated, w.title, w.body, w.other_names, "
        "w.is_deleted FROM tags t LEFT JOIN wiki_pages w ON w.title = t.name ORDER BY t.name")
    out = []
    for name, category, post_count, deprecated, title, body, other_names, wiki_deleted in rows:
        wiki = None if title is None else {"title": title, "body": body or "",
                                           "other_names": list(other_names or []),
                                           "is_deleted": bool(wiki_deleted)}
        out.append({"id": None, "name": name, "category": category, "post_count": post_count or 0,
                    "is_deprecated": bool(deprecated), "wiki_page": wiki})
    return out


def select_tags(tags: list[dict], limit: int | None = None) -> list[dict]:
    """General tags (category 0) with a live wiki page, by post_count descending (then name)."""
    keep = []
    for t in tags:
        wiki = t.get("wiki_page")
        if t.get("category") != 0 or not isinstance(wiki, dict) or wiki.get("is_deleted"):
            continue
        keep.append(t)
    keep.sort(key=lambda t: (-(t.get("post_count") or 0), t["name"]))
    return keep[:limit] if limit is not None and limit >= 0 else keep


def wiki_summary(wiki: dict | None, n_sentences: int = 2) -> str:
    from .dtext import dtext_to_plain, first_sentences

    body = (wiki or {}).get("body") or ""
    return first_sentences(dtext_to_plain(body), n_sentences) if body else ""


# -- one tag ----------------------------------------------------------------------------------

def token_schema(candidates: list[str], max_tokens: int) -> dict:
    return {
        "type": "object",
        "properties": {"tokens": {"type": "array", "items": {"type": "string", "enum": candidates},
                                  "minItems": 1, "maxItems": max_tokens}},
        "required": ["tokens"],
        "additionalProperties": False,
    }


def offline_tokens(shortlist: Shortlist, max_tokens: int) -> list[str]:
    """The deterministic heuristic: the fewest, longest candidate pieces that spell the tag's name
    (e.g. `thighhighs` -> `▁thigh`, `▁highs` from near matches rather than `▁thigh h i g`), in
    the tag's order; the first candidate when nothing spells any of it."""
    target = re.sub(r"[\W_]+", "", shortlist.tag.lower())
    covered = [False] * len(target)
    order = {p: i for i, p in enumerate(shortlist.candidates)}
    pool = sorted((p for p in shortlist.candidates if norm_piece(p) and norm_piece(p) in target),
                  key=lambda p: (-len(norm_piece(p)), order[p]))
    chosen: list[tuple[int, str]] = []
    for piece in pool:
        n = norm_piece(piece)
        best = max(((sum(not c for c in covered[i:i + len(n)]), -i) for i in _occurrences(target, n)))
        gain, pos = best[0], -best[1]
        if gain == 0 or 2 * gain < len(n):  # mostly already spelled by longer pieces
            continue
        covered[pos:pos + len(n)] = [True] * len(n)
        chosen.append((pos, piece))
        if all(covered) or len(chosen) == max_tokens:
            break
    return [p for _, p in sorted(chosen)] or shortlist.candidates[:1]


def _occurrences(text: str, sub: str) -> list[int]:
    return [i for i in range(len(text) - len(sub) + 1) if text.startswith(sub, i)]


def validate_tokens(data: Any, allowed: list[str], max_tokens: int) -> list[str]:
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise BadAnswer('the answer is not an object with a "tokens" list')
    allowed_set = set(allowed)
    tokens: list[str] = []
    for piece in data["tokens"]:
        if not isinstance(piece, str) or piece not in allowed_set:
            raise BadAnswer(f"piece {piece!r} is not in the shortlist")
        if piece not in tokens:
            tokens.append(piece)
    if not tokens or len(tokens) > max_tokens:
        raise BadAnswer(f"expected 1 to {max_tokens} pieces, got {len(tokens)}")
    return tokens


def tokens_request(tag: dict, shortlist: Shortlist, max_tokens: int, wiki_text: str) -> LLMRequest:
    others = ", ".join((tag.get("wiki_page") or {}).get("other_names") or []) or "(none)"
    user = (f"Tag: {tag['name']}\nOther names: {others}\nWiki: {wiki_text or '(empty)'}\n"
            f"Allowed pieces: {json.dumps(shortlist.candidates, ensure_ascii=False)}")
    return LLMRequest(
        system=SYSTEM_PROMPT.format(max_tokens=max_tokens), user=user,
        schema=token_schema(shortlist.candidates, max_tokens), schema_name="tag_tokens",
        validate=lambda data: validate_tokens(data, shortlist.candidates, max_tokens),
        offline=lambda: {"tokens": offline_tokens(shortlist, max_tokens)})


# -- the job ----------------------------------------------------------------------------------

def run_tag_tokens(tags: list[dict], vocab: Vocab, out_dir: str | Path, provider: Provider,
                   limit: int | None = None, concurrency: int = 4, max_tokens: int = 4,
                   max_candidates: int = 48, retry_failed: bool = False) -> dict:
    """Map the selected tags; finished tags (in done.txt) are skipped. Returns a summary."""
    if concurrency < 1:
        raise GaudiError("--concurrency must be at least 1")
    if max_tokens < 1:
        raise GaudiError("--max-tokens must be at least 1")
    selected = select_tags(tags, limit)
    builder = ShortlistBuilder(vocab, max_candidates=max_candidates)
    usage: dict[str, int] = {}
    counts = {"done": 0, "failed": 0}
    lock = threading.Lock()
    stop = threading.Event()

    with JobStore(out_dir) as store:
        retried = store.forget_errors() if retry_failed else 0
        todo = [t for t in selected if not store.is_done(t["name"])]

        def work(tag: dict) -> None:
            if stop.is_set():
                return
            name = tag["name"]
            wiki = tag.get("wiki_page") or {}
            wiki_text = wiki_summary(wiki)
            shortlist = builder.build(name, wiki.get("other_names") or [], wiki_text)
            if not shortlist.candidates:
                store.add_error(name, "no vocab piece matches this tag or its wiki text",
                                provider=provider.name, model=provider.model)
                _count(lock, counts, "failed")
                return
            request = tokens_request(tag, shortlist, max_tokens, wiki_text)
            try:
                reply = ask(provider, request)
            except BadAnswer as exc:
                with lock:
                    add_usage(usage, getattr(exc, "usage", None))
                store.add_error(name, f"{exc} (after a retry)", provider=provider.name,
                                model=provider.model, candidates=shortlist.candidates)
                _count(lock, counts, "failed")
                return
            except FatalProviderError:
                stop.set()
                raise
            except GaudiError as exc:  # the service kept failing for this tag
                store.add_error(name, str(exc), provider=provider.name, model=provider.model)
                _count(lock, counts, "failed")
                return
            with lock:
                add_usage(usage, reply.usage)
            store.add_result({
                "tag": name, "tokens": reply.value,
                "token_ids": [vocab.id_of(p) for p in reply.value],
                "provider": provider.name, "model": provider.model,
                "candidates": shortlist.candidates, "usage": reply.usage,
                "attempts": reply.attempts, "post_count": tag.get("post_count"),
            })
            _count(lock, counts, "done")

        with Progress("tag-tokens", total=len(todo), unit="tag") as bar, \
                ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="tag-tokens") as pool:
            futures = [pool.submit(work, t) for t in todo]
            try:
                for fut in as_completed(futures):
                    fut.result()
                    bar.update(1, ok=counts["done"], failed=counts["failed"])
            except BaseException:
                stop.set()
                for f in futures:
                    f.cancel()
                raise
        summary = {
            "selected": len(selected), "done": counts["done"], "failed": counts["failed"],
            "skipped": len(selected) - len(todo), "retried_failed": retried,
            "reconciled": store.reconciled, "usage": usage,
            "tokens_used": usage.get("total_tokens", 0), "provider": provider.name,
            "model": provider.model, "out_dir": str(store.dir),
        }
    return summary


def _count(lock: threading.Lock, counts: dict[str, int], key: str) -> None:
    with lock:
        counts[key] += 1


def summary_line(summary: dict) -> str:
    line = (f"tag-tokens: {summary['done']} done, {summary['failed']} failed, {summary['skipped']} "
            f"skipped (already done) of {summary['selected']} tags; {summary['tokens_used']:,} tokens "
            f"used ({summary['provider']}/{summary['model']}) -> {summary['out_dir']}")
    if summary["failed"]:
        line += " (see errors.jsonl; --retry-failed retries them)"
    return line
