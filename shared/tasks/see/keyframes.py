"""One image, or every keyframe of a scene list: the vision tasks that follow
scenes.detect in a pipeline (the seed's video-analysis DAG) take its result as
it is and answer one result per scene."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from typing_extensions import NotRequired, TypedDict

from ..errors import TaskError

#: What a vision task's `pipe` takes from the step before: a file's `path`
#: (download.file, frames) or scenes.detect's `scenes`.
IMAGE_PIPE = {"path": "image_path", "scenes": "scenes"}

#: Scenes at most per call: each is one model run.
MAX_SCENES = 1000


class SceneRef(TypedDict):
    """A scene as scenes.detect answers it; only `keyframe` is needed."""

    keyframe: str
    index: NotRequired[int]
    start: NotRequired[float]
    end: NotRequired[float]


R = TypeVar("R")


def per_image(task: str, image_path: str | None, scenes: list[SceneRef] | None,
              one: Callable[[str], R]) -> R | dict[str, list[dict[str, Any]]]:
    """`one(image_path)`, or `{"frames": [...]}` with `one(keyframe)` of every
    scene merged into that scene's index, start, end and keyframe."""
    if image_path is not None and scenes is None:
        return one(image_path)
    if scenes is None or image_path is not None:
        raise TaskError(f"{task}: give `image_path` (one image) or `scenes` (scenes.detect's scenes), one of them")
    if len(scenes) > MAX_SCENES:
        raise TaskError(f"{task}: {len(scenes)} scenes, over the limit of {MAX_SCENES} per call: split the list")
    frames = []
    for i, scene in enumerate(scenes):
        where = {"index": scene.get("index", i), "start": scene.get("start"), "end": scene.get("end"),
                 "keyframe": scene["keyframe"]}
        frames.append({**where, **one(scene["keyframe"])})  # type: ignore[dict-item]
    return {"frames": frames}
