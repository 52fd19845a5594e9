"""A vector store holding the vocab for `tag-tokens-fs`: found by name and reused, or created with
the vocab uploaded once (files.create, then vector_stores.files.create, polled until completed).

The store's metadata records the vocab's sha256, so a rerun — from any machine — recognises a
store that already holds this exact vocab and uploads nothing.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

from ..errors import GaudiError

SHA_KEY = "gaudi_vocab_sha256"


def vocab_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def default_store_name(vocab_path: str | Path) -> str:
    return f"gaudi-vocab-{vocab_sha256(vocab_path)[:12]}"


def _vector_stores(client):
    """`client.vector_stores` in current SDKs, `client.beta.vector_stores` in older ones."""
    vs = getattr(client, "vector_stores", None)
    return vs if vs is not None else client.beta.vector_stores


def find_store(client, name: str):
    """The newest store called `name` (walks every page of the listing), or None."""
    for store in _vector_stores(client).list(limit=100, order="desc"):
        if getattr(store, "name", None) == name:
            return store
    return None


def ensure_vector_store(client, vocab_path: str | Path, name: str | None = None,
                        call: Callable[[Callable[[], Any]], Any] | None = None,
                        poll_interval_ms: int | None = None, max_wait_seconds: float = 600.0) -> dict:
    """Return `{"id", "name", "reused", "file_id"}` for a store holding `vocab_path`.

    `call` wraps each API call (the provider's retry/backoff policy); identity by default.
    Polling follows the server's `openai-poll-after-ms` hint unless `poll_interval_ms` is given."""
    call = call or (lambda fn: fn())
    vocab_path = Path(vocab_path)
    sha = vocab_sha256(vocab_path)
    name = name or default_store_name(vocab_path)
    stores = _vector_stores(client)

    store = call(lambda: find_store(client, name))
    if store is not None:
        meta = dict(getattr(store, "metadata", None) or {})
        if meta.get(SHA_KEY) == sha and meta.get("gaudi_file_id"):
            if getattr(store, "status", "completed") == "expired":
                raise GaudiError(f"vector store {name!r} has expired: delete it or pick another --vector-store")
            return {"id": store.id, "name": name, "reused": True, "file_id": meta["gaudi_file_id"]}
        if meta.get(SHA_KEY) and meta.get(SHA_KEY) != sha:
            raise GaudiError(f"vector store {name!r} holds a different vocab: pick another --vector-store name")
    else:
        store = call(lambda: stores.create(name=name, metadata={SHA_KEY: sha}))

    # Upload once: the file, then attach it and wait until it is indexed.
    with open(vocab_path, "rb") as fh:
        data = fh.read()
    uploaded = call(lambda: client.files.create(file=(vocab_path.name, data, "text/plain"),
                                                purpose="assistants"))
    call(lambda: stores.files.create(store.id, file_id=uploaded.id))
    try:
        interval = {"poll_interval_ms": poll_interval_ms} if poll_interval_ms else {}
        vs_file = call(lambda: stores.files.poll(uploaded.id, vector_store_id=store.id,
                                                 max_wait_seconds=max_wait_seconds, **interval))
    except TimeoutError:
        raise GaudiError(f"the vocab was not indexed within {max_wait_seconds:g}s in vector store "
                         f"{name!r}: run again later (the store is reused)") from None
    if getattr(vs_file, "status", None) != "completed":
        err = getattr(getattr(vs_file, "last_error", None), "message", None) or vs_file.status
        raise GaudiError(f"indexing the vocab in vector store {name!r} failed: {err}")
    # Only a fully indexed upload is recorded, so an interrupted one is redone next time.
    call(lambda: stores.update(store.id, metadata={SHA_KEY: sha, "gaudi_file_id": uploaded.id}))
    return {"id": store.id, "name": name, "reused": False, "file_id": uploaded.id}
