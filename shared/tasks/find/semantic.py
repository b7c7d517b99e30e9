"""Text embeddings and search. Embeddings use sentence-transformers (torch:
heavy; run by `just test-heavy`); search over given embeddings is numpy only."""

from __future__ import annotations

from functools import lru_cache

from typing_extensions import TypedDict

from ..decorator import task
from ..errors import TaskError, require


class Embeddings(TypedDict):
    model: str
    dimensions: int
    vectors: list[list[float]]


@lru_cache(maxsize=2)
def _model(name: str):
    return require("semantic.embed", "sentence-transformers", "sentence_transformers").SentenceTransformer(name)


@task("semantic.embed", category="find", capabilities=["embeddings"], timeout=300)
def semantic_embed(texts: list[str], model: str = "sentence-transformers/all-MiniLM-L6-v2") -> Embeddings:
    """Embeds texts into unit vectors (cosine similarity = dot product)."""
    if not texts:
        raise TaskError("`texts` must hold at least one text")
    vectors = _model(model).encode(texts, normalize_embeddings=True)
    return {"model": model, "dimensions": int(vectors.shape[1]), "vectors": vectors.tolist()}


class Hit(TypedDict):
    index: int
    score: float
    text: str | None


class Hits(TypedDict):
    hits: list[Hit]


@task("semantic.search", category="find", capabilities=["embeddings"], timeout=120)
def semantic_search(query_vector: list[float], vectors: list[list[float]], texts: list[str] | None = None, top_k: int = 5) -> Hits:
    """Ranks `vectors` by cosine similarity to `query_vector` (e.g. outputs of semantic.embed)."""
    if texts is not None and len(texts) != len(vectors):
        raise TaskError("`texts` must be as many as `vectors`")
    return {"hits": [{"index": i, "score": score, "text": texts[i] if texts else None}
                     for i, score in rank(query_vector, vectors, top_k)]}


def rank(query_vector: list[float], vectors: list[list[float]], top_k: int) -> list[tuple[int, float]]:
    """The `top_k` (index, cosine similarity) of `vectors` nearest `query_vector`, best first."""
    import numpy as np

    if not vectors:
        raise TaskError("`vectors` is empty: nothing to search")
    if len({len(v) for v in vectors}) > 1:
        raise TaskError("the vectors searched differ in length: embed them all with the same model")
    m = np.asarray(vectors, dtype=np.float32)
    q = np.asarray(query_vector, dtype=np.float32)
    if m.ndim != 2 or q.shape != (m.shape[1],):
        raise TaskError(f"`query_vector` has {q.shape[0] if q.ndim == 1 else '?'} dimensions but `vectors` have {m.shape[1] if m.ndim == 2 else '?'}")
    norms = np.linalg.norm(m, axis=1) * (np.linalg.norm(q) or 1.0)
    scores = (m @ q) / np.where(norms == 0, 1.0, norms)
    return [(int(i), float(scores[i])) for i in np.argsort(-scores)[: max(1, top_k)]]
