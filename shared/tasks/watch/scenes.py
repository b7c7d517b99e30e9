"""Scene cuts in a video with PySceneDetect, each with a keyframe image, and
those scenes described in words (Florence-2 on each keyframe)."""

from __future__ import annotations


from typing_extensions import TypedDict

from .. import media
from ..context import output, relative, resolve
from ..decorator import task
from ..errors import TaskError, require


class Scene(TypedDict):
    index: int
    start: float
    end: float
    keyframe: str


class Scenes(TypedDict):
    scenes: list[Scene]
    count: int


@task("scenes.detect", category="watch", capabilities=["video"], timeout=1800, pipe={"path": "video_path"})
def scenes_detect(video_path: str, threshold: float = 27.0, min_scene_seconds: float = 0.5) -> Scenes:
    """Finds scene cuts (content detector) and writes one keyframe per scene."""
    from ..see.vision import cv2_module

    cv2_module("scenes.detect")  # scenedetect imports OpenCV: do it under the lock
    scenedetect = require("scenes.detect", "scenedetect[opencv-headless]", "scenedetect")
    ContentDetector, detect = scenedetect.ContentDetector, scenedetect.detect
    if threshold <= 0:
        raise TaskError("`threshold` must be positive")
    path = resolve(video_path, "video_path")
    duration = media.probe(path)["duration"] or 0.0
    found = detect(str(path), ContentDetector(threshold=threshold, min_scene_len=max(1, int(min_scene_seconds * 25))))
    spans = [(s.seconds, e.seconds) for s, e in found] or [(0.0, duration)]
    scenes: list[Scene] = []
    for i, (start, end) in enumerate(spans):
        frame = output(f"{path.stem}.scenes/{i:04d}.jpg")
        mid = start + (end - start) / 2
        media.run(["-ss", f"{mid:.3f}", "-i", str(path), "-frames:v", "1", "-q:v", "3", str(frame)], f"scenes.detect keyframe {i}")
        scenes.append({"index": i, "start": round(start, 3), "end": round(end, 3), "keyframe": relative(frame)})
    return {"scenes": scenes, "count": len(scenes)}


class DescribedScene(Scene):
    description: str


class DescribedScenes(TypedDict):
    scenes: list[DescribedScene]
    count: int


@task("scenes.describe", category="watch", capabilities=["video", "vision"], gpu="T4", timeout=1800,
      pipe={"scenes": "scenes"})
def scenes_describe(scenes: list[Scene], detail: str = "brief", model_id: str = "microsoft/Florence-2-base") -> DescribedScenes:
    """Describes every scene (scenes.detect's result) in words: Florence-2 captions its keyframe."""
    from ..see.keyframes import MAX_SCENES
    from ..see.vision import check_detail, florence

    prompt = check_detail(detail)
    if len(scenes) > MAX_SCENES:
        raise TaskError(f"{len(scenes)} scenes, over the limit of {MAX_SCENES} per call: split the list")
    out: list[DescribedScene] = []
    for s in scenes:
        parsed, _ = florence("scenes.describe", s["keyframe"], prompt, model_id)
        out.append({**s, "description": str(parsed or "").strip()})
    return {"scenes": out, "count": len(out)}
