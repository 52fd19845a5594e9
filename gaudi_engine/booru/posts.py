"""Danbooru post / tag objects -> catalogue rows. Tolerant of every schema seen in the wild
(2016..now, with or without `media_asset`); strict about the one thing training depends on:
only `tag_string_general` becomes the post's tags."""
from __future__ import annotations

import json
from typing import Any

NOT_IMAGE_EXTS = frozenset({"mp4", "webm", "zip", "swf"})
TAG_CATEGORIES = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta"}

_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

try:  # orjson: ~20x faster; parse + upsert speed is dominated by re-serialising `raw`
    import orjson

    def _dumps(obj: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except TypeError:  # e.g. an integer beyond 64 bits: the stdlib copes
            return _json_dumps(obj)
except ImportError:  # pragma: no cover - orjson is a dependency, but stay usable without it
    _dumps = _json_dumps


def loads(data: bytes | str) -> Any:
    """Decode a JSON answer (orjson when available); ValueError when it is not JSON."""
    try:
        return orjson.loads(data)
    except NameError:  # pragma: no cover
        return json.loads(data)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _variant_urls(obj: dict[str, Any]) -> dict[str, str]:
    """`media_asset.variants` by type, for posts whose top-level URL keys are missing."""
    asset = obj.get("media_asset")
    if not isinstance(asset, dict):
        return {}
    return {v.get("type"): v.get("url") for v in asset.get("variants") or []
            if isinstance(v, dict) and v.get("url")}


def parse_post(obj: dict[str, Any], origin: str, raw: str | None = None) -> dict[str, Any]:
    """A row for `catalogue.store.upsert_posts`. Banned/restricted posts (no md5, no URLs) keep
    md5 = NULL so the media side sees them as not downloadable. `raw`: the object's JSON text
    when the caller already has it (a dump's line), instead of serialising `obj` again."""
    if not isinstance(obj, dict) or _int(obj.get("id")) is None:
        raise ValueError(f"not a Danbooru post object: {str(obj)[:80]!r}")
    variants = _variant_urls(obj)
    md5 = obj.get("md5") or None
    general = (obj.get("tag_string_general") or "").split()
    return {
        "id": int(obj["id"]),
        "md5": md5,
        "file_ext": (obj.get("file_ext") or None),
        "file_size": _int(obj.get("file_size")),
        "rating": obj.get("rating") or None,
        "width": _int(obj.get("image_width")),
        "height": _int(obj.get("image_height")),
        # URL keys only when the post is downloadable at all: a restricted post's variants
        # (if any) are placeholders.
        "file_url": obj.get("file_url") or (variants.get("original") if md5 else None),
        "large_file_url": obj.get("large_file_url") or (
            (variants.get("sample") or variants.get("original")) if md5 else None),
        "preview_url": obj.get("preview_file_url") or (
            (variants.get("180x180") or variants.get("preview")) if md5 else None),
        "is_deleted": bool(obj.get("is_deleted") or False),
        "is_banned": bool(obj.get("is_banned") or False),
        "source": obj.get("source") or None,
        "origin": origin,
        "created_at": obj.get("created_at"),
        "raw": _dumps(obj) if raw is None else raw,
        "general_tags": list(dict.fromkeys(general)),
    }


def parse_posts(payload: Any, origin: str) -> list[dict[str, Any]]:
    """A /posts.json answer (a list) or a /posts/<id>.json answer (one object) -> rows."""
    items = payload if isinstance(payload, list) else [payload]
    return [parse_post(p, origin) for p in items]


def parse_tag(obj: dict[str, Any]) -> dict[str, Any]:
    """A /tags.json object -> a `tags` row."""
    return {"name": obj["name"], "category": _int(obj.get("category")),
            "post_count": _int(obj.get("post_count")) or 0,
            "is_deprecated": bool(obj.get("is_deprecated") or False)}
