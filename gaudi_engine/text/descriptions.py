"""The tag -> descriptions store (`tag_descriptions`), its JSON import/export and wiki fill.

Each tag has an ordered list of descriptions; every row says who wrote it: `user`, `wiki` or
`llm`. The rule the studio and the CLI rely on: automatic fills (wiki, llm) never touch a tag
that has a user description, and a user edit replaces the whole list of that tag.
JSON format (import and export): `{"tag": ["description", ...], ...}`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from ..catalogue.db import Catalogue, registered
from ..errors import GaudiError
from .descriptions_json import read_descriptions_json
from .dtext import first_sentences

SOURCES = ("user", "wiki", "llm")
_ROW_SCHEMA = pa.schema([("tag", pa.string()), ("idx", pa.int32()), ("text", pa.string()),
                         ("source", pa.string())])


def _clean(texts: Iterable[str]) -> list[str]:
    """Stripped, non-empty, without duplicates, order kept."""
    return list(dict.fromkeys(t.strip() for t in texts if isinstance(t, str) and t.strip()))


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise GaudiError(f"unknown description source {source!r}: use one of {', '.join(SOURCES)}")


def load_descriptions(cat: Catalogue) -> dict[str, list[str]]:
    """Every tag's descriptions in order."""
    out: dict[str, list[str]] = {}
    for tag, text in cat.fetchall("SELECT tag, text FROM tag_descriptions ORDER BY tag, idx"):
        out.setdefault(tag, []).append(text)
    return out


def _replace(cur, rows_by_tag: dict[str, list[tuple[str, str]]]) -> None:
    """Replace the rows of the given tags by (text, source) lists, in the caller's transaction."""
    if not rows_by_tag:
        return
    tags = pa.table({"tag": pa.array(list(rows_by_tag), pa.string())})
    rows = [(tag, i, text, src) for tag, items in rows_by_tag.items() for i, (text, src) in enumerate(items)]
    table = pa.table({"tag": [r[0] for r in rows], "idx": [r[1] for r in rows],
                      "text": [r[2] for r in rows], "source": [r[3] for r in rows]}, schema=_ROW_SCHEMA)
    with registered(cur, _gaudi_desc_tags=tags, _gaudi_desc_rows=table):
        cur.execute("DELETE FROM tag_descriptions WHERE tag IN (SELECT tag FROM _gaudi_desc_tags)")
        cur.execute("INSERT INTO tag_descriptions SELECT tag, idx, text, source, now() FROM _gaudi_desc_rows")


def set_descriptions(cat: Catalogue, tag: str, texts: Iterable[str], source: str = "user") -> int:
    """Replace `tag`'s whole list (an empty list clears it). Returns the number stored."""
    _check_source(source)
    tag = tag.strip()
    if not tag:
        raise GaudiError("a description needs a tag name")
    texts = _clean(texts)
    with cat.transaction() as cur:
        _replace(cur, {tag: [(t, source) for t in texts]})
    return len(texts)


def add_many(cat: Catalogue, texts_by_tag: dict[str, Iterable[str]], source: str,
             replace_user: bool = False) -> dict[str, int]:
    """Automatic fill (`wiki`/`llm`) of many tags in one transaction. A tag with any user
    description is skipped (`replace_user`: its user descriptions are dropped instead, counted in
    `replaced_user`); otherwise the tag's earlier rows from `source` are replaced by the new texts
    and rows from other automatic sources are kept. Returns counts."""
    _check_source(source)
    if source == "user":
        raise GaudiError("user descriptions are set with set_descriptions, not added")
    wanted = {t.strip(): _clean(v) for t, v in texts_by_tag.items() if t.strip()}
    wanted = {t: v for t, v in wanted.items() if v}
    stats = {"tags": 0, "added": 0, "skipped_user": 0}
    if replace_user:
        stats["replaced_user"] = 0
    if not wanted:
        return stats
    with cat.transaction() as cur:
        with registered(cur, _gaudi_fill_tags=pa.table({"tag": pa.array(list(wanted), pa.string())})):
            existing = cur.execute(
                "SELECT tag, text, source FROM tag_descriptions "
                "WHERE tag IN (SELECT tag FROM _gaudi_fill_tags) ORDER BY tag, idx").fetchall()
        current: dict[str, list[tuple[str, str]]] = {}
        for tag, text, src in existing:
            current.setdefault(tag, []).append((text, src))
        updates: dict[str, list[tuple[str, str]]] = {}
        for tag, texts in wanted.items():
            rows = current.get(tag, [])
            if any(src == "user" for _, src in rows):
                if not replace_user:
                    stats["skipped_user"] += 1
                    continue
                stats["replaced_user"] += 1
            kept = [(t, s) for t, s in rows if s not in (source, "user")]
            seen = {t for t, _ in kept}
            new = [(t, source) for t in texts if t not in seen]
            updates[tag] = kept + new
            stats["tags"] += 1
            stats["added"] += len(new)
        _replace(cur, updates)
    return stats


def add_descriptions(cat: Catalogue, tag: str, texts: Iterable[str], source: str,
                     replace_user: bool = False) -> int:
    """`add_many` for one tag; returns the number of descriptions added (0 if the user owns it,
    unless `replace_user`)."""
    return add_many(cat, {tag: texts}, source, replace_user=replace_user)["added"]


def import_json(cat: Catalogue, path: str | Path) -> dict[str, int]:
    """Import `{tag: [desc, ...]}` (a single string per tag is accepted) as user descriptions:
    each tag in the file gets exactly the file's list; other tags are untouched."""
    updates: dict[str, list[tuple[str, str]]] = {}
    for tag, texts in read_descriptions_json(path).items():
        tag = tag.strip()
        if tag:
            updates[tag] = [(t, "user") for t in _clean(texts)]
    with cat.transaction() as cur:
        _replace(cur, updates)
    return {"tags": len(updates), "descriptions": sum(len(v) for v in updates.values())}


def export_json(cat: Catalogue, path: str | Path) -> int:
    """Write every tag's descriptions as `{tag: [desc, ...]}`; returns the number of tags."""
    data = load_descriptions(cat)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n",
                       encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise GaudiError(f"cannot write {path}: {exc.strerror or exc}") from None
    return len(data)


def fill_from_wiki(cat: Catalogue, sentences: int = 2, replace_user: bool = False) -> dict[str, int]:
    """A default description (the wiki's first sentences) for every general tag with a wiki
    page; tags with user descriptions are left alone (`replace_user`: replaced by the wiki's)."""
    rows = cat.fetchall(
        "SELECT w.title, w.plain FROM wiki_pages w "
        "WHERE coalesce(w.plain, '') <> '' AND NOT w.is_deleted AND ("
        "  w.title IN (SELECT tag FROM post_tags) OR "
        "  w.title IN (SELECT name FROM tags WHERE category = 0))")
    texts = {}
    for title, plain in rows:
        desc = first_sentences(plain, sentences)
        if desc:
            texts[title] = [desc]
    stats = add_many(cat, texts, "wiki", replace_user=replace_user)
    stats["pages"] = len(rows)
    return stats


_ORDERS = {"post_count": "post_count DESC NULLS LAST, tag", "tag": "tag",
           "n_descriptions": "n_descriptions DESC, post_count DESC NULLS LAST, tag"}


def general_tags_table(cat: Catalogue, search: str = "", order: str = "post_count",
                       limit: int | None = None) -> list[dict[str, Any]]:
    """General tags (from posts, the tags table and the descriptions) with their post counts
    (Danbooru's when synced, else the catalogue's) and descriptions."""
    if order not in _ORDERS:
        raise GaudiError(f"unknown order {order!r}: use one of {', '.join(_ORDERS)}")
    sql = f"""
        WITH local AS (SELECT tag, count(*) AS n_posts FROM post_tags GROUP BY tag),
        remote AS (SELECT name AS tag, post_count FROM tags WHERE category = 0),
        descs AS (SELECT tag, count(*) AS n, list(text ORDER BY idx) AS texts,
                         string_agg(DISTINCT source, ',' ORDER BY source) AS sources
                  FROM tag_descriptions GROUP BY tag),
        names AS (SELECT tag FROM local UNION SELECT tag FROM descs)
        SELECT names.tag, coalesce(remote.post_count, local.n_posts, 0) AS post_count,
               coalesce(local.n_posts, 0) AS n_posts, coalesce(descs.n, 0) AS n_descriptions,
               coalesce(descs.sources, '') AS source, coalesce(descs.texts, []) AS descriptions
        FROM names LEFT JOIN local USING (tag) LEFT JOIN remote USING (tag)
             LEFT JOIN descs USING (tag)
        WHERE ? = '' OR names.tag ILIKE ?
        ORDER BY {_ORDERS[order]}
        {'LIMIT ' + str(int(limit)) if limit else ''}"""
    term = search.strip().replace(" ", "_")
    pattern = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    cols = ["tag", "post_count", "n_posts", "n_descriptions", "source", "descriptions"]
    rows = cat.fetchall(sql.replace("ILIKE ?", "ILIKE ? ESCAPE '\\'"), [term, pattern])
    return [dict(zip(cols, r)) for r in rows]
