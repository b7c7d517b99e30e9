"""Following things through a video on CPU with OpenCV: faces tracked across
frames (Haar cascade detections linked by overlap), motion, and objects with
Ultralytics' tracker on a GPU."""

from __future__ import annotations

from typing_extensions import TypedDict

from ..context import resolve
from ..decorator import task
from ..errors import TaskError
from ..see.vision import Box, cv2_module


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    x1, y1 = max(a["x"], b["x"]), max(a["y"], b["y"])
    x2 = min(a["x"] + a["width"], b["x"] + b["width"])
    y2 = min(a["y"] + a["height"], b["y"] + b["height"])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a["width"] * a["height"] + b["width"] * b["height"] - inter
    return inter / union if union > 0 else 0.0


class Sighting(TypedDict):
    time: float
    box: Box


class Track(TypedDict):
    id: int
    start: float
    end: float
    sightings: list[Sighting]


def link(frames: list[tuple[float, list[Box]]], min_iou: float = 0.3, max_gap: float = 1.0) -> list[Track]:
    """Links per-frame boxes into tracks: each box joins the live track it
    overlaps most (IoU ≥ `min_iou`), else starts one; a track unseen for
    `max_gap` seconds ends."""
    tracks: list[Track] = []
    live: list[Track] = []
    for t, boxes in frames:
        live = [tr for tr in live if t - tr["end"] <= max_gap]
        taken: set[int] = set()
        for box in boxes:
            best, score = None, min_iou
            for tr in live:
                if tr["id"] in taken:
                    continue
                s = iou(tr["sightings"][-1]["box"], box)
                if s >= score:
                    best, score = tr, s
            if best is None:
                best = {"id": len(tracks), "start": t, "end": t, "sightings": []}
                tracks.append(best)
                live.append(best)
            best["sightings"].append({"time": t, "box": box})
            best["end"] = t
            taken.add(best["id"])
    return tracks


class Tracks(TypedDict):
    tracks: list[Track]
    frames: int


def _frames(path, fps: float):
    cv2 = cv2_module("video tracking")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise TaskError(f"{path.name}: not a video OpenCV can read")
    native = cap.get(cv2.CAP_PROP_FPS) or 25.0
    every = max(1, int(round(native / fps)))
    i = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % every == 0:
                yield i / native, frame
            i += 1
    finally:
        cap.release()


@task("tracking.faces", category="watch", capabilities=["video", "vision"], timeout=1800)
def tracking_faces(video_path: str, fps: float = 5.0, min_size: int = 30) -> Tracks:
    """Detects faces in sampled frames (OpenCV Haar cascade) and links them into tracks over time."""
    if not 0 < fps <= 30:
        raise TaskError("`fps` must be above 0 and at most 30")
    path = resolve(video_path, "video_path")
    cv2 = cv2_module("tracking.faces")

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    frames: list[tuple[float, list[Box]]] = []
    for t, frame in _frames(path, fps):
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
        frames.append((round(t, 3), [{"x": float(x), "y": float(y), "width": float(w), "height": float(h)} for x, y, w, h in found]))
    return {"tracks": link(frames, max_gap=2.0 / fps), "frames": len(frames)}


class Moment(TypedDict):
    start: float
    end: float
    score: float


class Motion(TypedDict):
    segments: list[Moment]
    frames: int


@task("motion.detect", category="watch", capabilities=["video"], timeout=1800)
def motion_detect(video_path: str, fps: float = 5.0, threshold: float = 0.02) -> Motion:
    """Finds when things move: the share of pixels that change between sampled frames above `threshold`."""
    if not 0 < threshold < 1:
        raise TaskError("`threshold` must be between 0 and 1")
    path = resolve(video_path, "video_path")
    cv2 = cv2_module("motion.detect")

    prev, segments, current, n = None, [], None, 0
    for t, frame in _frames(path, fps):
        n += 1
        gray = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (5, 5), 0)
        if prev is not None:
            changed = float((cv2.absdiff(gray, prev) > 25).mean())
            if changed >= threshold:
                if current is None:
                    current = {"start": round(t, 3), "end": round(t, 3), "score": changed}
                current["end"] = round(t, 3)
                current["score"] = max(current["score"], changed)
            elif current is not None:
                segments.append(current)
                current = None
        prev = gray
    if current is not None:
        segments.append(current)
    return {"segments": segments, "frames": n}


class Tracked(TypedDict):
    tracks: list[dict]


@task("objects.track", category="watch", capabilities=["video", "vision"], gpu="T4", timeout=3600)
def objects_track(video_path: str, model: str = "yolov8n.pt", confidence: float = 0.3) -> Tracked:
    """Tracks objects through a video with Ultralytics YOLO + ByteTrack (ids stable across frames)."""
    if not 0 < confidence < 1:
        raise TaskError("`confidence` must be between 0 and 1")
    path = resolve(video_path, "video_path")
    from ..see.vision import _yolo

    tracks: dict[int, dict] = {}
    for i, r in enumerate(_yolo(model).track(str(path), conf=confidence, stream=True, verbose=False, tracker="bytetrack.yaml")):
        if r.boxes.id is None:
            continue
        for box, tid, cls in zip(r.boxes.xyxy, r.boxes.id, r.boxes.cls):
            x1, y1, x2, y2 = (float(v) for v in box)
            t = tracks.setdefault(int(tid), {"id": int(tid), "label": r.names[int(cls)], "frames": []})
            t["frames"].append({"frame": i, "box": {"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1}})
    return {"tracks": list(tracks.values())}
