"""`gaudi sync`, `gaudi sync-tags`, `gaudi sync-wiki`: Danbooru -> catalogue (gaudi_engine/booru/sync.py)."""
from __future__ import annotations

import argparse


def _client_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--base-url", default=None,
                   help="booru URL (default: $DANBOORU_BASE_URL or https://danbooru.donmai.us)")
    g.add_argument("--rps", type=float, default=None,
                   help="API requests per second at most (default: $DANBOORU_RPS or 2; 0 = "
                        "unlimited); a 429 answer pauses every request for its Retry-After and "
                        "lowers the pace, which recovers as answers come back")
    g.add_argument("--max-tries", type=int, default=6,
                   help="tries per request before giving up (default 6); 5xx, timeouts and "
                        "resets use them up, 429s (back-pressure) do not")
    g.add_argument("--timeout", type=float, default=30, help="seconds per request (default 30)")
    g.add_argument("--backoff", type=float, default=1.0,
                   help="first retry delay in seconds; doubles per try, with jitter (default 1)")


def make_client(args: argparse.Namespace):
    """A DanbooruClient from the environment plus the command's connection flags."""
    from ..booru.client import DanbooruClient
    from ..errors import GaudiError
    from ..workspace import DanbooruSettings

    base = getattr(args, "base_url", None)
    if base and not base.startswith(("http://", "https://")):
        raise GaudiError(f"--base-url must start with http:// or https:// (got {base!r})")
    if args.max_tries < 1:
        raise GaudiError("--max-tries must be at least 1")
    try:
        settings = DanbooruSettings.from_env(base_url=base, requests_per_second=args.rps)
    except ValueError:
        raise GaudiError("DANBOORU_RPS must be a number") from None
    return DanbooruClient(settings, max_tries=args.max_tries, timeout=args.timeout,
                          backoff_base=args.backoff)


def _open(args: argparse.Namespace):
    from ..catalogue import open_catalogue
    from ..cli import workspace_of

    ws = workspace_of(args).ensure()
    return ws, open_catalogue(ws.catalogue_path)


def cmd_sync(args: argparse.Namespace) -> int:
    from ..booru.sync import sync_posts

    client = make_client(args)
    ws, cat = _open(args)
    s = sync_posts(ws, cat, client, tags=args.tags, rating=args.rating, limit=args.limit,
                   page_size=args.page_size)
    state = "complete" if s["done"] else "more to fetch (run again to continue)"
    print(f"stored {s['stored']} posts ({s['deleted']} deleted, {s['banned']} without media) "
          f"in {s['pages']} pages from {client.base_url}; query {s['query'] or '(all)'!r}: "
          f"{s['total_seen']} posts so far, {state}; {s['retries']} retries")
    return 0


def cmd_sync_tags(args: argparse.Namespace) -> int:
    from ..booru.sync import sync_tags

    client = make_client(args)
    _, cat = _open(args)
    s = sync_tags(cat, client, batch=args.batch)
    print(f"tags: {s['stored']} of {s['requested']} found on {client.base_url}"
          + (f" ({s['missing']} unknown there)" if s["missing"] else ""))
    return 0


def cmd_sync_wiki(args: argparse.Namespace) -> int:
    from ..booru.sync import sync_wiki

    client = make_client(args)
    _, cat = _open(args)
    s = sync_wiki(cat, client, limit=args.limit, refresh=args.refresh)
    print(f"wiki: {s['found']} pages for {s['requested']} general tags "
          f"({s['missing']} without a page) from {client.base_url}")
    return 0


def register(add_command) -> None:
    p = add_command("sync", "sync posts (and their general tags) from Danbooru into the catalogue",
                    cmd_sync, description=(
                        "Store posts matching --tags/--rating, newest first, paging by id. Resumes "
                        "by itself after any stop; a later run with the same query fetches only "
                        "newer posts. Credentials: DANBOORU_USERNAME / DANBOORU_API_KEY."))
    p.add_argument("--limit", type=int, default=None, help="store at most N posts in this run")
    p.add_argument("--rating", default="all", choices=["all", "g", "s", "q", "e", "sfw", "nsfw"],
                   help="rating filter (default all)")
    p.add_argument("--tags", default="", metavar="QUERY",
                   help='Danbooru search, e.g. "1girl solo" (2 ordinary tags at most)')
    p.add_argument("--page-size", type=int, default=200, help="posts per request (1..200)")
    _client_options(p)

    p = add_command("sync-tags", "fetch categories and post counts of the catalogue's tags",
                    cmd_sync_tags)
    p.add_argument("--batch", type=int, default=100, help="tag names per request (default 100)")
    _client_options(p)

    p = add_command("sync-wiki", "fetch wiki pages of the catalogue's general tags", cmd_sync_wiki)
    p.add_argument("--limit", type=int, default=None, help="only the N most used tags")
    p.add_argument("--refresh", action="store_true", help="refetch pages already stored")
    _client_options(p)
