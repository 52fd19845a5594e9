"""A fake OpenAI-compatible HTTP server on loopback, driven by the real `openai` SDK in tests.

    fake = FakeOpenAI(api_key="sk-test-123456789").start()   # fake.base_url = http://127.0.0.1:P/v1
    fake.rate_limit(2, retry_after="0.3")     # next 2 completions/responses answer 429
    fake.misbehave("long_hair", "outside")    # answers for that tag name a piece outside the enum
    fake.calls["files.create"]                # how many uploads happened
    fake.stop()

Endpoints: POST /v1/chat/completions (honours response_format json_schema: answers with JSON valid
for the schema, picking the first 1-3 enum entries), POST/GET /v1/files, POST/GET
/v1/vector_stores (list paginates with `after`/`limit`/`has_more`), GET/POST
/v1/vector_stores/{id}, POST /v1/vector_stores/{id}/files, GET /v1/vector_stores/{id}/files/{fid}
(status `in_progress` for `processing_polls` retrieves, then `completed`), POST /v1/responses
(file_search tool over a known, indexed store + text.format json_schema). Strict schemas are
checked the way OpenAI does (every object closed, every property required).
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

OUTSIDE_PIECE = "\u2581definitely_not_in_the_shortlist"


class FakeOpenAI:
    def __init__(self, api_key: str | None = "sk-test-0123456789", delay: float = 0.0,
                 processing_polls: int = 2, max_page: int = 100):
        self.api_key = api_key
        self.delay = delay                    # seconds per completion/response (a slow server)
        self.processing_polls = processing_polls
        self.max_page = max_page              # cap on `limit` for list endpoints
        self.calls: Counter[str] = Counter()
        self.requests: list[tuple[str, dict]] = []
        self.files: dict[str, dict] = {}
        self.stores: dict[str, dict] = {}     # insertion order = creation order
        self.store_files: dict[tuple[str, str], dict] = {}
        self._faults: list[tuple[int, str]] = []   # (status, retry_after) for the next calls
        self._misbehave: dict[str, list] = {}      # tag -> [kind, remaining or None]
        self._lock = threading.Lock()
        self._ids = Counter()
        self._server: ThreadingHTTPServer | None = None

    # -- control -----------------------------------------------------------------------------
    def start(self) -> "FakeOpenAI":
        fake = self

        class Handler(_Handler):
            server_state = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def rate_limit(self, n: int, retry_after: str = "0") -> None:
        with self._lock:
            self._faults.extend([(429, retry_after)] * n)

    def server_error(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._faults.extend([(status, "")] * n)

    def misbehave(self, tag: str, kind: str, times: int | None = None) -> None:
        """kind: "outside" (a piece not in the enum) or "invalid_json"; times None = always."""
        assert kind in ("outside", "invalid_json")
        self._misbehave[tag] = [kind, times]

    def add_store(self, name: str, metadata: dict | None = None) -> dict:
        return self._new_store(name, metadata or {})

    # -- state helpers -----------------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        with self._lock:
            self._ids[prefix] += 1
            return f"{prefix}{self._ids[prefix]:04d}"

    def _new_store(self, name: str | None, metadata: dict) -> dict:
        store = {"id": self._new_id("vs_"), "object": "vector_store", "created_at": int(time.time()),
                 "name": name, "usage_bytes": 0, "status": "completed", "last_active_at": None,
                 "metadata": dict(metadata), "expires_after": None, "expires_at": None,
                 "file_counts": {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0}}
        self.stores[store["id"]] = store
        return store

    def _take_fault(self) -> tuple[int, str] | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _fault_for(self, text: str) -> str | None:
        m = re.search(r"^Tag: (\S+)", text, re.M)
        if not m or m.group(1) not in self._misbehave:
            return None
        with self._lock:
            entry = self._misbehave[m.group(1)]
            if entry[1] is not None:
                if entry[1] <= 0:
                    return None
                entry[1] -= 1
            return entry[0]


# -- schema-following answers ---------------------------------------------------------------------

def check_strict(schema: dict, path: str = "$") -> str | None:
    """OpenAI's strict mode: objects closed and every property required. None when fine."""
    if schema.get("type") == "object":
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return f"{path}: additionalProperties must be false"
        if sorted(schema.get("required", [])) != sorted(props):
            return f"{path}: every property must be required"
        for k, sub in props.items():
            err = check_strict(sub, f"{path}.{k}")
            if err:
                return err
    if schema.get("type") == "array":
        return check_strict(schema.get("items", {}), f"{path}[]")
    return None


def answer_for(schema: dict, tag: str, i: int = 0) -> Any:
    t = schema.get("type")
    if "enum" in schema:
        return schema["enum"][i % len(schema["enum"])]
    if t == "object":
        return {k: answer_for(sub, tag) for k, sub in schema.get("properties", {}).items()}
    if t == "array":
        items = schema.get("items", {})
        n = max(schema.get("minItems", 1), min(3, schema.get("maxItems", 3), len(items.get("enum", [0] * 3))))
        return [answer_for(items, tag, j) for j in range(n)]
    if t == "string":
        return f"A picture showing {tag.replace('_', ' ')}, view {i + 1}."
    if t in ("integer", "number"):
        return i
    if t == "boolean":
        return True
    return None


# -- HTTP -----------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: FakeOpenAI

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, obj: Any = None, raw: bytes | None = None, headers: dict | None = None) -> None:
        body = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error", headers=None) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "param": None, "code": None}},
                   headers=headers)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _authorised(self) -> bool:
        key = self.server_state.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self._error(401, "Incorrect API key provided.", "invalid_request_error")
            return False
        return True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        raw = self._body()
        if not self._authorised():
            return
        url = urlparse(self.path)
        path = url.path.rstrip("/")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        routes = [
            ("POST", r"/v1/chat/completions", self._chat),
            ("POST", r"/v1/responses", self._responses),
            ("POST", r"/v1/files", self._file_create),
            ("GET", r"/v1/files/(?P<fid>[^/]+)", self._file_get),
            ("POST", r"/v1/vector_stores", self._store_create),
            ("GET", r"/v1/vector_stores", self._store_list),
            ("GET", r"/v1/vector_stores/(?P<vs>[^/]+)", self._store_get),
            ("POST", r"/v1/vector_stores/(?P<vs>[^/]+)", self._store_update),
            ("POST", r"/v1/vector_stores/(?P<vs>[^/]+)/files", self._store_file_create),
            ("GET", r"/v1/vector_stores/(?P<vs>[^/]+)/files/(?P<fid>[^/]+)", self._store_file_get),
        ]
        for m, pattern, fn in routes:
            match = re.fullmatch(pattern, path)
            if m == method and match:
                fn(raw=raw, query=query, **match.groupdict())
                return
        self._error(404, f"no route {method} {path}")

    def _json(self, raw: bytes) -> dict:
        return json.loads(raw or b"{}")

    # -- completions ---------------------------------------------------------------------------
    def _answer_text(self, schema: dict, prompt: str) -> str:
        st = self.server_state
        m = re.search(r"^Tag: (\S+)", prompt, re.M)
        tag = m.group(1) if m else "thing"
        kind = st._fault_for(prompt)
        if kind == "invalid_json":
            return '{"tokens": ["\u2581oops"'
        value = answer_for(schema, tag)
        if kind == "outside" and isinstance(value, dict):
            key = next(iter(value))
            value[key] = [OUTSIDE_PIECE]
        return json.dumps(value, ensure_ascii=False)

    def _pre_completion(self, name: str, body: dict) -> bool:
        st = self.server_state
        st.calls[name] += 1
        st.requests.append((name, body))
        if st.delay:
            time.sleep(st.delay)
        fault = st._take_fault()
        if fault:
            status, retry_after = fault
            self._error(status, "Rate limit reached" if status == 429 else "The server had an error",
                        "rate_limit_exceeded" if status == 429 else "server_error",
                        headers={"Retry-After": retry_after} if retry_after else None)
            return False
        return True

    def _chat(self, raw: bytes, query: dict) -> None:
        body = self._json(raw)
        if not self._pre_completion("chat.completions", body):
            return
        fmt = body.get("response_format") or {}
        if fmt.get("type") != "json_schema":
            return self._error(400, "this fake only answers json_schema response formats")
        js = fmt["json_schema"]
        if js.get("strict") and check_strict(js["schema"]):
            return self._error(400, f"Invalid schema: {check_strict(js['schema'])}")
        prompt = "\n".join(str(m.get("content")) for m in body.get("messages", []))
        text = self._answer_text(js["schema"], prompt)
        p, c = len(prompt) // 4 + 1, len(text) // 4 + 1
        self._send(200, {
            "id": self.server_state._new_id("chatcmpl-"), "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": text, "refusal": None}}],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}})

    def _responses(self, raw: bytes, query: dict) -> None:
        st = self.server_state
        body = self._json(raw)
        if not self._pre_completion("responses.create", body):
            return
        fs = [t for t in body.get("tools", []) if t.get("type") == "file_search"]
        if not fs:
            return self._error(400, "expected a file_search tool")
        for vs in fs[0].get("vector_store_ids", []):
            store = st.stores.get(vs)
            if not store or store["file_counts"]["completed"] < 1:
                return self._error(400, f"vector store {vs} is unknown or holds no indexed file")
        fmt = (body.get("text") or {}).get("format") or {}
        if fmt.get("type") != "json_schema" or "schema" not in fmt or "name" not in fmt:
            return self._error(400, "text.format must be a json_schema with name and schema")
        if fmt.get("strict") and check_strict(fmt["schema"]):
            return self._error(400, f"Invalid schema: {check_strict(fmt['schema'])}")
        prompt = f"{body.get('instructions') or ''}\n{body.get('input')}"
        text = self._answer_text(fmt["schema"], prompt)
        p, c = len(prompt) // 4 + 1, len(text) // 4 + 1
        self._send(200, {
            "id": st._new_id("resp_"), "object": "response", "created_at": time.time(),
            "model": body.get("model"), "status": "completed", "error": None,
            "incomplete_details": None, "instructions": body.get("instructions"),
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": body.get("tools"),
            "text": body.get("text"), "metadata": {},
            "output": [
                {"type": "file_search_call", "id": st._new_id("fs_"), "status": "completed",
                 "queries": ["vocab"], "results": None},
                {"type": "message", "id": st._new_id("msg_"), "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": p, "output_tokens": c, "total_tokens": p + c,
                      "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}})

    # -- files and vector stores --------------------------------------------------------------------
    def _file_create(self, raw: bytes, query: dict) -> None:
        st = self.server_state
        st.calls["files.create"] += 1
        ctype = self.headers.get("Content-Type", "")
        if "multipart/form-data" not in ctype:
            return self._error(400, "expected multipart/form-data")
        msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
        fields, upload = {}, None
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                upload = (part.get_filename(), part.get_payload(decode=True))
            else:
                fields[name] = part.get_payload(decode=True).decode()
        if upload is None or not fields.get("purpose"):
            return self._error(400, "file and purpose are required")
        obj = {"id": st._new_id("file-"), "object": "file", "bytes": len(upload[1]),
               "created_at": int(time.time()), "filename": upload[0], "purpose": fields["purpose"],
               "status": "processed", "status_details": None}
        st.files[obj["id"]] = {**obj, "content": upload[1]}
        self._send(200, obj)

    def _file_get(self, raw: bytes, query: dict, fid: str) -> None:
        f = self.server_state.files.get(fid)
        if not f:
            return self._error(404, f"No such File object: {fid}")
        self._send(200, {k: v for k, v in f.items() if k != "content"})

    def _store_create(self, raw: bytes, query: dict) -> None:
        st = self.server_state
        st.calls["vector_stores.create"] += 1
        body = self._json(raw)
        store = st._new_store(body.get("name"), body.get("metadata") or {})
        for fid in body.get("file_ids") or []:
            self._attach(store, fid)
        self._send(200, store)

    def _store_list(self, raw: bytes, query: dict) -> None:
        st = self.server_state
        st.calls["vector_stores.list"] += 1
        limit = min(int(query.get("limit", 20)), st.max_page)
        stores = list(st.stores.values())
        if query.get("order", "desc") == "desc":
            stores.reverse()
        if "name" in query:  # not an OpenAI filter; some compatible servers have it
            stores = [s for s in stores if s["name"] == query["name"]]
        if query.get("after"):
            ids = [s["id"] for s in stores]
            stores = stores[ids.index(query["after"]) + 1:] if query["after"] in ids else []
        page = stores[:limit]
        self._send(200, {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                         "last_id": page[-1]["id"] if page else None, "has_more": len(stores) > limit})

    def _store_get(self, raw: bytes, query: dict, vs: str) -> None:
        store = self.server_state.stores.get(vs)
        if not store:
            return self._error(404, f"No vector store found with id '{vs}'.")
        self._send(200, store)

    def _store_update(self, raw: bytes, query: dict, vs: str) -> None:
        st = self.server_state
        st.calls["vector_stores.update"] += 1
        store = st.stores.get(vs)
        if not store:
            return self._error(404, f"No vector store found with id '{vs}'.")
        body = self._json(raw)
        if body.get("metadata") is not None:
            store["metadata"] = dict(body["metadata"])
        if body.get("name"):
            store["name"] = body["name"]
        self._send(200, store)

    def _attach(self, store: dict, fid: str) -> dict:
        obj = {"id": fid, "object": "vector_store.file", "created_at": int(time.time()),
               "vector_store_id": store["id"], "status": "in_progress", "usage_bytes": 0,
               "last_error": None, "attributes": {}, "_polls": 0}
        self.server_state.store_files[(store["id"], fid)] = obj
        store["file_counts"]["in_progress"] += 1
        store["file_counts"]["total"] += 1
        return obj

    def _store_file_create(self, raw: bytes, query: dict, vs: str) -> None:
        st = self.server_state
        st.calls["vector_stores.files.create"] += 1
        store = st.stores.get(vs)
        fid = self._json(raw).get("file_id")
        if not store or fid not in st.files:
            return self._error(404, f"unknown vector store {vs} or file {fid}")
        obj = self._attach(store, fid)
        self._send(200, {k: v for k, v in obj.items() if not k.startswith("_")})

    def _store_file_get(self, raw: bytes, query: dict, vs: str, fid: str) -> None:
        st = self.server_state
        st.calls["vector_stores.files.retrieve"] += 1
        obj = st.store_files.get((vs, fid))
        if not obj:
            return self._error(404, f"No file {fid} in vector store {vs}")
        obj["_polls"] += 1
        if obj["status"] == "in_progress" and obj["_polls"] > st.processing_polls:
            obj["status"] = "completed"
            counts = st.stores[vs]["file_counts"]
            counts["in_progress"] -= 1
            counts["completed"] += 1
        self._send(200, {k: v for k, v in obj.items() if not k.startswith("_")},
                   headers={"openai-poll-after-ms": "10"})
