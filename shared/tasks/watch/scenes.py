"""Scene cuts in a video with PySceneDetect, each with a keyframe image."""

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


@task("scenes.detect", category="watch", capabilities=["video"], timeout=1800)
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
    spans = [(s.get_seconds(), e.get_seconds()) for s, e in found] or [(0.0, duration)]
    scenes: list[Scene] = []
    for i, (start, end) in enumerate(spans):
        frame = output(f"{path.stem}.scenes/{i:04d}.jpg")
        mid = start + (end - start) / 2
        media.run(["-ss", f"{mid:.3f}", "-i", str(path), "-frames:v", "1", "-q:v", "3", str(frame)], f"scenes.detect keyframe {i}")
        scenes.append({"index": i, "start": round(start, 3), "end": round(end, 3), "keyframe": relative(frame)})
    return {"scenes": scenes, "count": len(scenes)}
