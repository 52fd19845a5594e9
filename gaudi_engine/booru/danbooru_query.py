"""Danbooru's post search as LocalBooru answers it: metatags, the 2-tag limit, error bodies."""
from __future__ import annotations

import json
from typing import Any

MAX_ORDINARY_TAGS = 2


def error_body(error: str, message: str) -> bytes:
    return json.dumps({"success": False, "error": error, "message": message, "backtrace": []}).encode()


class QueryError(Exception):
    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def int_param(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


class PostQuery:
    """Danbooru's post search, the part clients use: metatags + at most 2 ordinary tags."""

    def __init__(self, query: str):
        self.tests: list = []
        ordinary = 0
        for term in query.split():
            neg = term.startswith("-")
            body = term[1:] if neg else term
            key, _, value = body.partition(":")
            key = key.lower()
            if value and key == "rating":
                allowed = {r[0] for r in value.lower().split(",") if r}
                self._add(lambda p, a=allowed: p.get("rating") in a, neg)
            elif value and key == "is" and value in ("sfw", "nsfw"):
                allowed = {"g", "s"} if value == "sfw" else {"q", "e"}
                self._add(lambda p, a=allowed: p.get("rating") in a, neg)
            elif value and key == "status":
                if value == "deleted":
                    self._add(lambda p: bool(p.get("is_deleted")), neg)
                elif value == "active":
                    self._add(lambda p: not p.get("is_deleted"), neg)
            elif value and key == "id":
                self._add(_id_test(value), neg)
            elif value and key in ("order", "limit"):
                pass
            else:
                ordinary += 1
                self._add(lambda p, t=body: t in p.get("tag_string", "").split(), neg)
        if ordinary > MAX_ORDINARY_TAGS:
            raise QueryError(422, "PostQuery::TagLimitError",
                             "You cannot search for more than 2 tags at a time. Upgrade your "
                             "account to search for more tags at once.")

    def _add(self, test, neg: bool) -> None:
        self.tests.append((lambda p: not test(p)) if neg else test)

    def __call__(self, post: dict[str, Any]) -> bool:
        return all(t(post) for t in self.tests)


def _id_test(value: str):
    if value.startswith(">="):
        n = int(value[2:]); return lambda p: p["id"] >= n
    if value.startswith("<="):
        n = int(value[2:]); return lambda p: p["id"] <= n
    if value.startswith(">"):
        n = int(value[1:]); return lambda p: p["id"] > n
    if value.startswith("<"):
        n = int(value[1:]); return lambda p: p["id"] < n
    if ".." in value:
        lo, hi = value.split("..", 1)
        return lambda p: (not lo or p["id"] >= int(lo)) and (not hi or p["id"] <= int(hi))
    ids = {int(v) for v in value.split(",")}
    return lambda p: p["id"] in ids
