"""`gaudi tag-tokens`, `gaudi tag-tokens-fs` (tag -> SentencePiece pieces through an LLM or the
offline heuristic) and `gaudi spm-train` (a SentencePiece model from the catalogue's text)."""
from __future__ import annotations

import argparse
import sys


def register(add_command) -> None:
    p = add_command(
        "tag-tokens", "map general tags with a wiki to a few SentencePiece pieces (LLM or offline)",
        _tag_tokens,
        description="Map each general tag that has a wiki page (by post count, up to --limit) to a "
                    "few pieces of a SentencePiece vocab. The model may only choose from a per-tag "
                    "shortlist (JSON-schema enum). Writes OUT_DIR/results.jsonl, errors.jsonl and "
                    "done.txt; a rerun resumes. Provider `openai` uses OPENAI_API_KEY (and "
                    "OPENAI_BASE_URL for any compatible server); without a key, `offline`.")
    _job_args(p)
    p.add_argument("--provider", choices=["openai", "offline"], default=None,
                   help="default: openai when OPENAI_API_KEY is set, else offline")

    p = add_command(
        "tag-tokens-fs", "tag-tokens through the Responses API with file_search over the vocab",
        _tag_tokens_fs,
        description="Like tag-tokens, with the OpenAI Responses API and a file_search tool over a "
                    "vector store holding the vocab (created, or reused by name; the vocab is "
                    "uploaded once). Needs OPENAI_API_KEY.")
    _job_args(p)
    p.add_argument("--vector-store", default=None, metavar="NAME",
                   help="vector store name (default: gaudi-vocab-<sha of the vocab>)")

    p = add_command(
        "spm-train", "train a SentencePiece model on the catalogue's descriptions and wiki text",
        _spm_train,
        description="Train SentencePiece on every tag description and wiki page in the catalogue "
                    "(opened read-only); writes OUT/spm.model and OUT/spm.vocab.txt (piece<TAB>score).")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--vocab-size", type=int, default=8000,
                   help="target size; a small corpus stops earlier (default 8000)")
    p.add_argument("--model-type", choices=["unigram", "bpe"], default="unigram")


def _job_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tags-json", metavar="FILE",
                     help="tag list as /tags.json?only=id,name,category,post_count,is_deprecated,wiki_page")
    src.add_argument("--from-catalogue", action="store_true",
                     help="read tags and wiki pages from the workspace catalogue (read-only)")
    p.add_argument("--spm-vocab", required=True, metavar="FILE",
                   help="spm.vocab.txt (piece<TAB>score; a spm.model beside it is used to encode)")
    p.add_argument("--out-dir", required=True, metavar="DIR")
    p.add_argument("--model", default=None, help="LLM model name (default gpt-4.1-mini)")
    p.add_argument("--limit", type=int, default=None, help="at most N tags (the most used first)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--max-tokens", type=int, default=4, help="pieces per tag at most (default 4)")
    p.add_argument("--max-candidates", type=int, default=48, help="shortlist size (default 48)")
    p.add_argument("--retry-failed", action="store_true", help="retry the tags in errors.jsonl")


def _load_tags(args) -> list[dict]:
    from ..text.tag_tokens import load_tags_json, tags_from_catalogue

    if args.tags_json:
        return load_tags_json(args.tags_json)
    from ..catalogue import open_catalogue
    from ..cli import workspace_of

    cat = open_catalogue(workspace_of(args).catalogue_path, read_only=True)
    try:
        return tags_from_catalogue(cat)
    finally:
        cat.close()


def _run(args, provider) -> int:
    from ..text.spm import load_vocab
    from ..text.tag_tokens import run_tag_tokens, summary_line

    vocab = load_vocab(args.spm_vocab)
    tags = _load_tags(args)
    summary = run_tag_tokens(tags, vocab, args.out_dir, provider, limit=args.limit,
                             concurrency=args.concurrency, max_tokens=args.max_tokens,
                             max_candidates=args.max_candidates, retry_failed=args.retry_failed)
    print(summary_line(summary))
    return 0


def _tag_tokens(args) -> int:
    from ..text.llm import make_provider

    provider, note = make_provider(args.provider, args.model)
    if note:
        print(note, file=sys.stderr)
    return _run(args, provider)


def _tag_tokens_fs(args) -> int:
    from ..text.llm import OpenAIFileSearchProvider, openai_client
    from ..text.vector_store import ensure_vector_store

    client = openai_client()
    provider = OpenAIFileSearchProvider(client, vector_store_id="", model=args.model)
    store = ensure_vector_store(client, args.spm_vocab, args.vector_store, call=provider.call)
    provider.vector_store_id = store["id"]
    how = "reusing" if store["reused"] else "created"
    print(f"vector store {store['name']} ({store['id']}): {how}", file=sys.stderr)
    return _run(args, provider)


def _spm_train(args) -> int:
    from ..catalogue import open_catalogue
    from ..cli import workspace_of
    from ..text.spm import catalogue_corpus, train_spm

    ws = workspace_of(args)
    cat = open_catalogue(ws.catalogue_path, read_only=True)
    try:
        sentences = catalogue_corpus(cat)
    finally:
        cat.close()
    info = train_spm(sentences, args.out, vocab_size=args.vocab_size, model_type=args.model_type)
    print(f"spm-train: {info['pieces']} pieces (asked {info['requested']}) from {info['sentences']} "
          f"lines -> {ws.rel(info['model'])}, {ws.rel(info['vocab'])}")
    return 0
