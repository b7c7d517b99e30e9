"""Ultralytics YOLO beyond boxes: instance masks, body keypoints and tracks
through a video. The weights (yolov8n-seg.pt, yolov8n-pose.pt, yolov8n.pt)
come from Ultralytics' servers, unreachable here: the code is real and the
tests cover the checks before the model call."""

from __future__ import annotations

from typing_extensions import TypedDict

from ..context import resolve
from ..decorator import task
from ..errors import TaskError
from .keyframes import IMAGE_PIPE
from .vision import Box, box_of, check_confidence, yolo_model, yolo_predict

#: Polygon points kept per mask (a mask's outline can have thousands).
MAX_POLYGON_POINTS = 200


class Instance(TypedDict):
    label: str
    confidence: float
    box: Box
    polygon: list[list[float]]
    area: float


class Instances(TypedDict):
    instances: list[Instance]
    width: int
    height: int


def _thin(points: list[list[float]], most: int) -> list[list[float]]:
    """Every k-th point, so that at most `most` remain (outline order kept)."""
    step = max(1, -(-len(points) // most))
    return points[::step]


def polygon_area(points: list[list[float]]) -> float:
    """Area of a simple polygon (shoelace formula), in square pixels."""
    n = len(points)
    twice = sum(points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1] for i in range(n))
    return abs(twice) / 2.0


@task("yolo.segment", category="see", capabilities=["vision"], gpu="T4", timeout=300, pipe={"path": "image_path"})
def yolo_segment(image_path: str, confidence: float = 0.25, model: str = "yolov8n-seg.pt") -> Instances:
    """Instance segmentation with Ultralytics YOLO: each object's class, box and outline polygon (pixels)."""
    result, w, h = yolo_predict("yolo.segment", model, image_path, confidence)
    outlines = result.masks.xy if result.masks is not None else []
    out: list[Instance] = []
    for b, outline in zip(result.boxes, outlines):
        polygon = _thin([[float(x), float(y)] for x, y in outline], MAX_POLYGON_POINTS)
        out.append({"label": result.names[int(b.cls)], "confidence": float(b.conf), "box": box_of(b.xyxy[0]),
                    "polygon": polygon, "area": polygon_area(polygon) if len(polygon) > 2 else 0.0})
    return {"instances": out, "width": w, "height": h}


#: The 17 COCO keypoints, in the order YOLO-pose answers them.
COCO_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle")


class Joint(TypedDict):
    name: str
    x: float
    y: float
    confidence: float


class Person(TypedDict):
    confidence: float
    box: Box
    keypoints: list[Joint]


class People(TypedDict):
    people: list[Person]
    width: int
    height: int


@task("yolo.pose", category="see", capabilities=["vision"], gpu="T4", timeout=300, pipe={"path": "image_path"})
def yolo_pose(image_path: str, confidence: float = 0.25, model: str = "yolov8n-pose.pt") -> People:
    """Pose estimation with Ultralytics YOLO: every person's box and 17 named keypoints (pixels)."""
    result, w, h = yolo_predict("yolo.pose", model, image_path, confidence)
    points = result.keypoints.data.tolist() if result.keypoints is not None else []
    people: list[Person] = []
    for b, joints in zip(result.boxes, points):
        people.append({"confidence": float(b.conf), "box": box_of(b.xyxy[0]),
                       "keypoints": [{"name": COCO_KEYPOINTS[i], "x": float(j[0]), "y": float(j[1]),
                                      "confidence": float(j[2]) if len(j) > 2 else 1.0}
                                     for i, j in enumerate(joints[:len(COCO_KEYPOINTS)])]})
    return {"people": people, "width": w, "height": h}


class FrameBox(TypedDict):
    frame: int
    box: Box


class ObjectTrack(TypedDict):
    id: int
    label: str
    frames: list[FrameBox]


class ObjectTracks(TypedDict):
    tracks: list[ObjectTrack]
    frames: int
    fps: float


def track_objects(task_name: str, video_path: str, model: str, confidence: float, stride: int) -> ObjectTracks:
    """YOLO + ByteTrack over a video: tracks whose ids stay the same across frames."""
    check_confidence(confidence)
    if not 1 <= stride <= 100:
        raise TaskError("`stride` must be between 1 and 100 (every n-th frame)")
    path = resolve(video_path, "video_path")
    from .. import media

    fps = float(media.probe(path).get("fps") or 25.0)
    tracks: dict[int, ObjectTrack] = {}
    n = 0
    for i, r in enumerate(yolo_model(task_name, model).track(str(path), conf=confidence, stream=True, verbose=False,
                                                  tracker="bytetrack.yaml", vid_stride=stride)):
        n += 1
        if r.boxes.id is None:
            continue
        for box, tid, cls in zip(r.boxes.xyxy, r.boxes.id, r.boxes.cls):
            t = tracks.setdefault(int(tid), {"id": int(tid), "label": r.names[int(cls)], "frames": []})
            t["frames"].append({"frame": i * stride, "box": box_of(box)})
    return {"tracks": list(tracks.values()), "frames": n, "fps": fps}


@task("yolo.track", category="see", capabilities=["vision", "video"], gpu="T4", timeout=3600,
      pipe={"path": "video_path"}, aliases=["objects.track"])
def yolo_track(video_path: str, confidence: float = 0.3, model: str = "yolov8n.pt", stride: int = 1) -> ObjectTracks:
    """Tracks objects through a video with Ultralytics YOLO + ByteTrack (ids stable across frames; frame numbers)."""
    return track_objects("yolo.track", video_path, model, confidence, stride)
