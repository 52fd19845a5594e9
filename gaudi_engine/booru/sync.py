"""Post, tag and wiki sync from a Danbooru-compatible booru into the catalogue.

Posts are paged by id (DESIGN §5): the first pass walks down from the newest post with
`page=b<lowest id seen>`; each page is stored in ONE transaction together with the query's
`sync_state`, so a process killed at any moment resumes exactly where the last stored page
ended. When a page comes back empty the pass is done; later runs fetch only newer posts with
`page=a<highest id seen>` (whose answers are also newest first, hence min/max below).
"""
from __future__ import annotations

from typing import Any

from ..catalogue.db import Catalogue
from ..catalogue.store import read_sync_state, upsert_tags, upsert_wiki, write_posts, write_sync_state
from ..errors import GaudiError, RemoteError
from ..progress import Progress
from ..text.dtext import dtext_to_plain
from ..workspace import Workspace
from .client import DanbooruClient
from .posts import parse_post, parse_tag

RATINGS = {"all": "", "g": "rating:g", "s": "rating:s", "q": "rating:q", "e": "rating:e",
           "sfw": "rating:g,s", "nsfw": "rating:q,e"}
MAX_PAGE_SIZE = 200


def build_query(tags: str = "", rating: str = "all") -> str:
    """The Danbooru search string for a sync: the user's tags plus the rating metatag."""
    if rating not in RATINGS:
        raise GaudiError(f"unknown rating {rating!r}: use one of {', '.join(RATINGS)}")
    terms = tags.split()
    if RATINGS[rating]:
        if any(t.lower().lstrip("-").startswith("rating:") for t in terms):
            raise GaudiError("give the rating either with --rating or as rating: in --tags, not both")
        terms.append(RATINGS[rating])
    return " ".join(terms)


def query_key(base_url: str, query: str) -> str:
    """Sync state is per booru and per query (term order does not matter)."""
    return f"{base_url.rstrip('/')}|{' '.join(sorted(query.split()))}"


def sync_posts(ws: Workspace, cat: Catalogue, client: DanbooruClient, tags: str = "",
               rating: str = "all", limit: int | None = None, page_size: int = 200) -> dict[str, Any]:
    """Store the booru's posts matching `tags`/`rating`, resuming from `sync_state`.
    `limit` caps the posts stored by this call. Returns a summary dict."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise GaudiError(f"--page-size must be between 1 and {MAX_PAGE_SIZE} (Danbooru's cap)")
    if limit is not None and limit < 0:
        raise GaudiError("--limit must be 0 or more")
    query = build_query(tags, rating)
    key = query_key(client.base_url, query)
    state = read_sync_state(cat, key) or {"lowest_id": None, "highest_id": None, "done": False,
                                          "posts_seen": 0}
    origin = client.base_url
    summary = {"query": query, "stored": 0, "pages": 0, "deleted": 0, "banned": 0,
               "resumed_from": state["lowest_id"] if not state["done"] else state["highest_id"]}

    def remaining() -> int | None:
        return None if limit is None else limit - summary["stored"]

    with Progress("sync", total=limit, unit="post") as bar:
        if client.on_retry is None:
            client.on_retry = bar.log
        # pass 1: downwards from the newest post (or from where a previous run stopped)
        while not state["done"] and remaining() != 0:
            want = page_size if remaining() is None else min(page_size, remaining())
            page = f"b{state['lowest_id']}" if state["lowest_id"] is not None else "1"
            objs = client.posts(query, limit=want, page=page)
            if not objs:
                state["done"] = True
                with cat.transaction() as cur:
                    write_sync_state(cur, key, state["lowest_id"], state["highest_id"], True,
                                     state["posts_seen"])
                break
            rows = sorted(_parse_page(objs, origin, client), key=lambda r: -r["id"])[:want]
            if state["lowest_id"] is not None and rows[-1]["id"] >= state["lowest_id"]:
                raise RemoteError(f"{client.base_url} ignored page=b{state['lowest_id']} (answered "
                                  f"id {rows[-1]['id']}): not a Danbooru-compatible booru?")
            _store_page(cat, key, rows, state, summary, bar)
        # pass 2: once the whole range is stored, only posts newer than the highest id seen
        while state["done"] and remaining() != 0:
            want = page_size if remaining() is None else min(page_size, remaining())
            if state["highest_id"] is None:
                break  # the query matched nothing at all
            objs = client.posts(query, limit=want, page=f"a{state['highest_id']}")
            if not objs:
                break
            # keep the lowest ids so highest_id advances without leaving holes
            rows = sorted(_parse_page(objs, origin, client), key=lambda r: r["id"])[:want]
            if rows[-1]["id"] <= state["highest_id"]:
                raise RemoteError(f"{client.base_url} ignored page=a{state['highest_id']} (answered "
                                  f"id {rows[-1]['id']}): not a Danbooru-compatible booru?")
            _store_page(cat, key, rows, state, summary, bar)
    summary.update(done=state["done"], lowest_id=state["lowest_id"], highest_id=state["highest_id"],
                   total_seen=state["posts_seen"], requests=client.stats["requests"],
                   retries=client.stats["retries"])
    return summary


def _parse_page(objs: list, origin: str, client: DanbooruClient) -> list[dict[str, Any]]:
    try:
        return [parse_post(o, origin) for o in objs]
    except (ValueError, TypeError, KeyError) as exc:
        raise RemoteError(f"{client.base_url}/posts.json answered something that is not a post: "
                          f"{exc}") from None


def _store_page(cat: Catalogue, key: str, rows: list[dict[str, Any]], state: dict[str, Any],
                summary: dict[str, Any], bar: Progress) -> None:
    ids = [r["id"] for r in rows]
    lowest = min(ids) if state["lowest_id"] is None else min(state["lowest_id"], min(ids))
    highest = max(ids) if state["highest_id"] is None else max(state["highest_id"], max(ids))
    with cat.transaction() as cur:  # the page and the cursor that says it is stored: together
        n = write_posts(cur, rows)
        write_sync_state(cur, key, lowest, highest, state["done"], state["posts_seen"] + n)
    state.update(lowest_id=lowest, highest_id=highest, posts_seen=state["posts_seen"] + n)
    summary["stored"] += n
    summary["pages"] += 1
    summary["deleted"] += sum(1 for r in rows if r["is_deleted"])
    summary["banned"] += sum(1 for r in rows if r["md5"] is None)
    bar.update(n, lowest_id=lowest, highest_id=highest, pages=summary["pages"])


def sync_tags(cat: Catalogue, client: DanbooruClient, batch: int = 100) -> dict[str, Any]:
    """Categories and post counts for every tag in `post_tags`, `batch` names per request; each
    batch is stored as it arrives, so an interrupted run keeps what it fetched."""
    if not 1 <= batch <= 1000:
        raise GaudiError("--batch must be between 1 and 1000 (Danbooru's limit for /tags.json)")
    names = [r[0] for r in cat.fetchall("SELECT DISTINCT tag FROM post_tags ORDER BY tag")]
    found = 0
    with Progress("sync-tags", total=len(names), unit="tag") as bar:
        if client.on_retry is None:
            client.on_retry = bar.log
        for i in range(0, len(names), batch):
            chunk = names[i:i + batch]
            rows = [parse_tag(t) for t in client.tags(chunk, batch=batch)]
            found += upsert_tags(cat, rows)
            bar.update(len(chunk), found=found)
    return {"requested": len(names), "stored": found, "missing": len(names) - found}


def sync_wiki(cat: Catalogue, client: DanbooruClient, limit: int | None = None,
              refresh: bool = False, batch: int = 25) -> dict[str, Any]:
    """Wiki pages of the catalogue's general tags, most used first. Tags without a page get an
    empty row (so a rerun does not ask again); `refresh` refetches everything."""
    sql = ("SELECT pt.tag, count(*) AS n FROM post_tags pt "
           + ("" if refresh else "WHERE pt.tag NOT IN (SELECT title FROM wiki_pages) ")
           + "GROUP BY pt.tag ORDER BY n DESC, pt.tag")
    titles = [r[0] for r in cat.fetchall(sql)]
    if limit is not None:
        titles = titles[:limit]
    found = 0
    pending: list[dict[str, Any]] = []
    with Progress("sync-wiki", total=len(titles), unit="page") as bar:
        if client.on_retry is None:
            client.on_retry = bar.log
        for title in titles:
            page = client.wiki_page(title)
            if page is not None and not page.get("is_deleted"):
                found += 1
                pending.append({"title": title, "body": page.get("body") or "",
                                "plain": dtext_to_plain(page.get("body") or ""),
                                "other_names": page.get("other_names") or [],
                                "is_deleted": False, "updated_at": page.get("updated_at")})
            else:
                pending.append({"title": title, "body": "", "plain": "", "other_names": [],
                                "is_deleted": bool(page and page.get("is_deleted")),
                                "updated_at": None})
            if len(pending) >= batch:
                upsert_wiki(cat, pending)
                pending = []
            bar.update(1, found=found)
        upsert_wiki(cat, pending)
    return {"requested": len(titles), "found": found, "missing": len(titles) - found}
