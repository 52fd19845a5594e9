"""LLM providers behind one call: `ask(provider, request) -> Reply`.

- `openai`: Chat Completions with Structured Outputs (`response_format` json_schema, strict) via
  the official SDK; `OPENAI_API_KEY`, and `OPENAI_BASE_URL` for any compatible server.
- `openai-file-search`: the Responses API with a `file_search` tool over a vector store and a
  json_schema text format (the store is prepared by `vector_store.ensure_vector_store`).
- `offline`: no network; the request's own deterministic heuristic answers.

The SDK's own retries are switched off (`max_retries=0`) so one loop here owns backoff: 429, 408,
409 and 5xx and connection errors are retried with exponential backoff and jitter, honouring
`Retry-After` / `retry-after-ms`. An answer that is not valid JSON or breaks the task's rules
(`BadAnswer`) is asked once more, then given up. Bad credentials or an unknown model stop the
whole run (`FatalProviderError`). The API key is never printed (only masked) nor stored.
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import GaudiError, RemoteError
from ..workspace import mask_secret

DEFAULT_MODEL = "gpt-4.1-mini"
OFFLINE_MODEL = "heuristic-v1"
PROVIDERS = ("openai", "offline")
RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}


class BadAnswer(Exception):
    """The model answered, but not with what the schema and the task allow."""


class FatalProviderError(GaudiError):
    """Retrying cannot help (bad key, no such model, forbidden): stop the whole run."""


@dataclass
class LLMRequest:
    """One structured question. `validate` turns the parsed JSON into the task's answer or raises
    BadAnswer; `offline` answers it without a model."""

    system: str
    user: str
    schema: dict
    schema_name: str
    validate: Callable[[Any], Any]
    offline: Callable[[], Any]


@dataclass
class Reply:
    value: Any
    usage: dict[str, int] = field(default_factory=dict)
    attempts: int = 1


def add_usage(total: dict[str, int], usage: dict[str, int] | None) -> dict[str, int]:
    for k, v in (usage or {}).items():
        total[k] = total.get(k, 0) + int(v or 0)
    return total


# -- providers -----------------------------------------------------------------------------------

class Provider:
    name = "base"
    model = ""

    def complete(self, request: LLMRequest) -> tuple[Any, dict[str, int]]:
        """The parsed JSON answer and its token usage; raises BadAnswer for unparsable output."""
        raise NotImplementedError


class OfflineProvider(Provider):
    name = "offline"

    def __init__(self, model: str | None = None):
        self.model = model or OFFLINE_MODEL

    def complete(self, request: LLMRequest) -> tuple[Any, dict[str, int]]:
        return request.offline(), {}


class _OpenAIBase(Provider):
    def __init__(self, client, model: str | None = None, max_tries: int = 6, backoff_base: float = 1.0,
                 backoff_cap: float = 60.0, sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.model = model or DEFAULT_MODEL
        self.max_tries = max_tries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run one API call with our backoff policy."""
        import openai

        for attempt in range(1, self.max_tries + 1):
            try:
                return fn()
            except openai.AuthenticationError:
                key = mask_secret(os.environ.get("OPENAI_API_KEY"))
                raise FatalProviderError(f"the server rejected the API key (OPENAI_API_KEY={key})") from None
            except (openai.PermissionDeniedError, openai.NotFoundError) as exc:
                where = f"{exc.request.method} {exc.request.url.path}"
                raise FatalProviderError(f"{_status_line(exc)} ({where}, model {self.model!r})") from None
            except openai.APIStatusError as exc:
                if exc.status_code not in RETRY_STATUSES:
                    raise RemoteError(_status_line(exc)) from None
                error: Exception = exc
                wait = _retry_after(exc.response.headers)
            except openai.APIConnectionError as exc:
                error, wait = exc, None
            if attempt == self.max_tries:
                if isinstance(error, openai.APIConnectionError):  # the network, not this request
                    raise FatalProviderError(f"cannot reach {self.client.base_url} after {attempt} "
                                             f"tries: {_status_line(error)}")
                raise RemoteError(f"gave up after {attempt} tries: {_status_line(error)}")
            if wait is None:
                wait = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            self._sleep(min(wait, self.backoff_cap))
        raise AssertionError("unreachable")


class OpenAIChatProvider(_OpenAIBase):
    """Chat Completions + Structured Outputs."""

    name = "openai"

    def complete(self, request: LLMRequest) -> tuple[Any, dict[str, int]]:
        resp = self.call(lambda: self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": request.system},
                      {"role": "user", "content": request.user}],
            response_format={"type": "json_schema", "json_schema": {
                "name": request.schema_name, "schema": request.schema, "strict": True}},
        ))
        usage = _usage(getattr(resp, "usage", None), "prompt_tokens", "completion_tokens")
        if not resp.choices:
            raise BadAnswer("the answer had no choices")
        message = resp.choices[0].message
        if getattr(message, "refusal", None):
            raise _bad(f"the model refused: {message.refusal}", usage)
        return _parse_json(message.content, usage), usage


class OpenAIFileSearchProvider(_OpenAIBase):
    """Responses API with `file_search` over a vector store and a json_schema text format."""

    name = "openai-file-search"

    def __init__(self, client, vector_store_id: str, model: str | None = None, **kw: Any):
        super().__init__(client, model, **kw)
        self.vector_store_id = vector_store_id

    def complete(self, request: LLMRequest) -> tuple[Any, dict[str, int]]:
        resp = self.call(lambda: self.client.responses.create(
            model=self.model,
            instructions=request.system,
            input=request.user,
            tools=[{"type": "file_search", "vector_store_ids": [self.vector_store_id]}],
            text={"format": {"type": "json_schema", "name": request.schema_name,
                             "schema": request.schema, "strict": True}},
        ))
        usage = _usage(getattr(resp, "usage", None), "input_tokens", "output_tokens")
        return _parse_json(resp.output_text, usage), usage


def ask(provider: Provider, request: LLMRequest, bad_answer_retries: int = 1) -> Reply:
    """Ask, validate, and ask once more after a bad answer. Raises BadAnswer (with `.usage`) when
    every answer was bad; RemoteError/FatalProviderError pass through."""
    usage: dict[str, int] = {}
    last: BadAnswer | None = None
    for attempt in range(1, bad_answer_retries + 2):
        try:
            data, u = provider.complete(request)
            add_usage(usage, u)
            return Reply(request.validate(data), usage, attempt)
        except BadAnswer as exc:
            add_usage(usage, getattr(exc, "usage", None))
            last = exc
    assert last is not None
    last.usage = usage  # type: ignore[attr-defined]
    raise last


# -- set-up -----------------------------------------------------------------------------------

def openai_client(timeout: float = 120.0):
    """An SDK client from OPENAI_API_KEY / OPENAI_BASE_URL, with SDK retries off (ours are used)."""
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        raise GaudiError("OPENAI_API_KEY is not set: export it (and OPENAI_BASE_URL for a compatible "
                         "server) or use --provider offline")
    import openai

    return openai.OpenAI(api_key=key, base_url=os.environ.get("OPENAI_BASE_URL") or None,
                         max_retries=0, timeout=timeout)


def resolve_provider_name(name: str | None) -> tuple[str, str | None]:
    """The provider to use and a one-line note when it was chosen for the user."""
    if name:
        if name not in PROVIDERS:
            raise GaudiError(f"unknown provider {name!r}: choose one of {', '.join(PROVIDERS)}")
        return name, None
    if os.environ.get("OPENAI_API_KEY"):
        return "openai", None
    return "offline", "no OPENAI_API_KEY set: using the offline provider (deterministic heuristic)"


def make_provider(name: str | None, model: str | None = None, **kw: Any) -> tuple[Provider, str | None]:
    name, note = resolve_provider_name(name)
    if name == "offline":
        return OfflineProvider(), note
    return OpenAIChatProvider(openai_client(), model, **kw), note


# -- helpers -----------------------------------------------------------------------------------

def _bad(message: str, usage: dict[str, int]) -> BadAnswer:
    exc = BadAnswer(message)
    exc.usage = usage  # type: ignore[attr-defined]
    return exc


def _parse_json(text: str | None, usage: dict[str, int]) -> Any:
    try:
        return json.loads(text or "")
    except json.JSONDecodeError as exc:
        raise _bad(f"the answer is not valid JSON ({exc.msg} at char {exc.pos})", usage) from None


def _usage(u: Any, in_key: str, out_key: str) -> dict[str, int]:
    if u is None:
        return {}
    got = {"input_tokens": getattr(u, in_key, 0), "output_tokens": getattr(u, out_key, 0),
           "total_tokens": getattr(u, "total_tokens", 0)}
    return {k: int(v or 0) for k, v in got.items()}


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _status_line(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc)
    message = " ".join(str(message).split())[:200]
    return f"HTTP {status}: {message}" if status else f"{type(exc).__name__}: {message}"
