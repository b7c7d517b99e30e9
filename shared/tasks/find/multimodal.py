"""Text and images searched together in SigLIP's shared space: a text (or an
image) finds the images, keyframes and texts nearest to it. Encoding needs
SigLIP's weights (a GPU backend); keyframes that siglip.embed already embedded
and a query vector are ranked without the model (numpy, CPU)."""

from __future__ import annotations

from typing_extensions import NotRequired, TypedDict

from ..decorator import task
from ..errors import TaskError
from ..see.models import siglip_vectors
from .semantic import rank

#: Candidates at most per call (each image is one model run).
MAX_CANDIDATES = 10_000


class EmbeddedFrame(TypedDict):
    """A keyframe as siglip.embed answers it over scenes."""

    vector: list[float]
    keyframe: NotRequired[str]
    index: NotRequired[int]
    start: NotRequired[float | None]
    end: NotRequired[float | None]


class Match(TypedDict):
    kind: str
    index: int
    score: float
    item: str | None
    start: float | None
    end: float | None


class Matches(TypedDict):
    matches: list[Match]
    model: str


@task("multimodal.search", category="find", capabilities=["vision", "embeddings"], gpu="T4", timeout=300,
      pipe={"frames": "frames"})
def multimodal_search(query: str | None = None, query_image: str | None = None, query_vector: list[float] | None = None,
                      images: list[str] | None = None, frames: list[EmbeddedFrame] | None = None,
                      texts: list[str] | None = None, top_k: int = 5,
                      model_id: str = "google/siglip-base-patch16-224") -> Matches:
    """Finds the images, keyframes (siglip.embed's frames) and texts nearest a text, an image or a vector (SigLIP)."""
    if sum(q is not None for q in (query, query_image, query_vector)) != 1:
        raise TaskError("give one query: `query` (a text), `query_image` (a file) or `query_vector`")
    if not 1 <= top_k <= 1000:
        raise TaskError("`top_k` must be between 1 and 1000")
    count = sum(len(c or []) for c in (images, frames, texts))
    if count == 0:
        raise TaskError("nothing to search: give `images`, `frames` or `texts`")
    if count > MAX_CANDIDATES:
        raise TaskError(f"{count} candidates, over the limit of {MAX_CANDIDATES} per call")
    if query_vector is None:
        query_vector = siglip_vectors([query_image] if query_image else None, [query] if query else None, model_id)[0]
    # (kind, index in its list, what it names, start, end) for each candidate, and its vector.
    found: list[tuple[str, int, str | None, float | None, float | None]] = []
    vectors: list[list[float]] = []
    for i, f in enumerate(frames or []):
        found.append(("frame", f.get("index", i), f.get("keyframe"), f.get("start"), f.get("end")))
        vectors.append(f["vector"])
    for kind, items, as_images in (("image", images, True), ("text", texts, False)):
        if items:
            found += [(kind, i, item, None, None) for i, item in enumerate(items)]
            vectors += siglip_vectors(items if as_images else None, None if as_images else items, model_id)
    matches: list[Match] = []
    for i, score in rank(query_vector, vectors, top_k):
        kind, index, item, start, end = found[i]
        matches.append({"kind": kind, "index": index, "score": round(score, 6), "item": item, "start": start, "end": end})
    return {"matches": matches, "model": model_id}
