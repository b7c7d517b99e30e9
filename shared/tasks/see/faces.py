"""Who is who: face embeddings (dlib's 128-d ResNet through face_recognition,
whose weights ship in the face-recognition-models package) and clustering of
those embeddings into identities (numpy, CPU)."""

from __future__ import annotations

from typing_extensions import NotRequired, TypedDict

from ..context import resolve
from ..decorator import task
from ..errors import TaskError, require
from .keyframes import IMAGE_PIPE, SceneRef, per_image
from .vision import Box


class FaceVector(TypedDict):
    vector: list[float]
    box: NotRequired[Box]
    keyframe: NotRequired[str]
    index: NotRequired[int]


class FaceVectors(TypedDict):
    faces: list[FaceVector]
    count: int


class FrameFaceVectors(FaceVectors):
    index: int
    start: float | None
    end: float | None
    keyframe: str


class SceneFaceVectors(TypedDict):
    frames: list[FrameFaceVectors]


@task("faces.embed", category="see", capabilities=["vision", "embeddings"], gpu="T4", timeout=300, pipe=IMAGE_PIPE)
def faces_embed(image_path: str | None = None, scenes: list[SceneRef] | None = None,
                model: str = "small") -> FaceVectors | SceneFaceVectors:
    """Finds the faces in an image (or every scene's keyframe) and embeds each as a 128-d vector (dlib ResNet).

    Same person ⇔ distance under ~0.6; faces.cluster groups them."""
    if model not in ("small", "large"):
        raise TaskError("`model` must be small (5 landmarks) or large (68)")
    fr = require("faces.embed", "face-recognition", "face_recognition",
                 "install dlib-bin, face-recognition-models and face-recognition (--no-deps)")

    def one(image: str) -> FaceVectors:
        pixels = fr.load_image_file(str(resolve(image, "image_path")))
        places = fr.face_locations(pixels)
        vectors = fr.face_encodings(pixels, known_face_locations=places, model=model)
        faces: list[FaceVector] = [
            {"vector": [round(float(x), 6) for x in v],
             "box": {"x": float(left), "y": float(top), "width": float(right - left), "height": float(bottom - top)}}
            for (top, right, bottom, left), v in zip(places, vectors)]
        return {"faces": faces, "count": len(faces)}

    return per_image("faces.embed", image_path, scenes, one)


class Cluster(TypedDict):
    id: int
    size: int
    members: list[int]
    centroid: list[float]


class Clusters(TypedDict):
    clusters: list[Cluster]
    labels: list[int]
    count: int


#: Faces at most per call: clustering compares every pair.
MAX_FACES = 5000


def _flatten(faces: list[FaceVector] | None, frames: list[FrameFaceVectors] | None) -> list[FaceVector]:
    if (faces is None) == (frames is None):
        raise TaskError("faces.cluster: give `faces` (faces.embed on one image) or `frames` (on scenes), one of them")
    if faces is not None:
        return list(faces)
    out: list[FaceVector] = []
    for f in frames or []:
        out += [{**face, "keyframe": f["keyframe"], "index": f["index"]} for face in f["faces"]]
    return out


def cluster(vectors: list[list[float]], threshold: float) -> list[int]:
    """Single-link clustering: faces closer than `threshold` (Euclidean) share a
    cluster, transitively. Labels number the clusters by first appearance."""
    import numpy as np

    n = len(vectors)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    x = np.asarray(vectors, dtype=np.float32)
    for i in range(n):
        near = np.nonzero(np.linalg.norm(x[i + 1:] - x[i], axis=1) < threshold)[0]
        for j in near:
            a, b = root(i), root(i + 1 + int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    numbers: dict[int, int] = {}
    return [numbers.setdefault(root(i), len(numbers)) for i in range(n)]


@task("faces.cluster", category="see", capabilities=["vision"], gpu="T4", timeout=300,
      pipe={"faces": "faces", "frames": "frames"})
def faces_cluster(faces: list[FaceVector] | None = None, frames: list[FrameFaceVectors] | None = None,
                  threshold: float = 0.6) -> Clusters:
    """Groups face embeddings into identities: faces nearer than `threshold` are the same person.

    Takes faces.embed's result (one image or scenes); runs on CPU (numpy)."""
    if not 0 < threshold < 2:
        raise TaskError("`threshold` must be between 0 and 2 (dlib's same-person distance is about 0.6)")
    found = _flatten(faces, frames)
    if len(found) > MAX_FACES:
        raise TaskError(f"{len(found)} faces, over the limit of {MAX_FACES} per call")
    vectors = [f["vector"] for f in found]
    if len({len(v) for v in vectors}) > 1:
        raise TaskError("the face vectors differ in length: embed them all with the same model")
    labels = cluster(vectors, threshold)
    import numpy as np

    clusters: list[Cluster] = []
    for c in range(max(labels, default=-1) + 1):
        members = [i for i, label in enumerate(labels) if label == c]
        centroid = np.mean([vectors[i] for i in members], axis=0)
        clusters.append({"id": c, "size": len(members), "members": members,
                         "centroid": [round(float(v), 6) for v in centroid]})
    return {"clusters": clusters, "labels": labels, "count": len(clusters)}
