"""An embedded vector store (USearch, HNSW on disk).

A collection lives in `DWA_VECTOR_DIR/<name>/` (default
`<DWA_DATA_DIR>/vectors`): `index.usearch` plus `meta.json` (each key's
id and metadata). Writes are whole: a new index file is written beside the
old one and renamed over it.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

from typing_extensions import TypedDict

from ..decorator import task
from ..errors import TaskError, require

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LOCK = threading.Lock()


def _dir(collection: str) -> Path:
    if not _NAME.match(collection):
        raise TaskError("`collection` must be 1-64 letters, digits, '-' or '_'")
    root = Path(os.environ.get("DWA_VECTOR_DIR") or Path(os.environ.get("DWA_DATA_DIR", "./data")) / "vectors")
    return root / collection


def _usearch():
    return require("vector store", "usearch", "usearch.index").Index


class Item(TypedDict, total=False):
    id: str
    vector: list[float]
    metadata: dict


class Upserted(TypedDict):
    collection: str
    upserted: int
    total: int
    dimensions: int


@task("vector.upsert", category="find", capabilities=["vectors"], timeout=300)
def vector_upsert(collection: str, items: list[Item]) -> Upserted:
    """Adds or replaces vectors (by `id`, with `metadata`) in a collection on disk."""
    import numpy as np

    Index = _usearch()
    if not items:
        raise TaskError("`items` must hold at least one item")
    for i, it in enumerate(items):
        if not isinstance(it.get("id"), str) or not it.get("vector"):
            raise TaskError(f"`items[{i}]` needs an `id` (string) and a `vector`")
    dims = {len(it["vector"]) for it in items}
    if len(dims) != 1:
        raise TaskError(f"`items` mix vector sizes: {sorted(dims)}")
    ndim = dims.pop()
    d = _dir(collection)
    with _LOCK:
        d.mkdir(parents=True, exist_ok=True)
        meta_path, index_path = d / "meta.json", d / "index.usearch"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"ndim": ndim, "next": 0, "keys": {}, "items": {}}
        if meta["ndim"] != ndim:
            raise TaskError(f"collection {collection!r} holds {meta['ndim']}-dimensional vectors, not {ndim}")
        index = Index(ndim=ndim, metric="cos")
        if index_path.exists():
            index.load(str(index_path))
        for it in items:
            key = meta["keys"].get(it["id"])
            if key is not None:
                index.remove(key)
            else:
                key = meta["next"]
                meta["next"] += 1
                meta["keys"][it["id"]] = key
            index.add(key, np.asarray(it["vector"], dtype=np.float32))
            meta["items"][str(key)] = {"id": it["id"], "metadata": it.get("metadata") or {}}
        tmp_index, tmp_meta = d / "index.usearch.tmp", d / "meta.json.tmp"
        index.save(str(tmp_index))
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_index, index_path)
        os.replace(tmp_meta, meta_path)
        return {"collection": collection, "upserted": len(items), "total": len(meta["keys"]), "dimensions": ndim}


class Match(TypedDict):
    id: str
    score: float
    metadata: dict


class Matches(TypedDict):
    matches: list[Match]


@task("vector.query", category="find", capabilities=["vectors"], timeout=60)
def vector_query(collection: str, vector: list[float], top_k: int = 5) -> Matches:
    """The `top_k` nearest items to `vector` (cosine similarity, 1 = same direction)."""
    import numpy as np

    Index = _usearch()
    d = _dir(collection)
    meta_path, index_path = d / "meta.json", d / "index.usearch"
    if not meta_path.exists():
        raise TaskError(f"no collection {collection!r}: upsert into it first")
    meta = json.loads(meta_path.read_text())
    if len(vector) != meta["ndim"]:
        raise TaskError(f"`vector` has {len(vector)} dimensions; collection {collection!r} holds {meta['ndim']}")
    if top_k < 1:
        raise TaskError("`top_k` must be at least 1")
    index = Index(ndim=meta["ndim"], metric="cos")
    index.load(str(index_path))
    found = index.search(np.asarray(vector, dtype=np.float32), min(top_k, len(meta["keys"])))
    out: list[Match] = []
    for key, dist in zip(found.keys, found.distances):
        item = meta["items"].get(str(int(key)))
        if item is not None:
            out.append({"id": item["id"], "score": round(1.0 - float(dist), 6), "metadata": item["metadata"]})
    return {"matches": out}
