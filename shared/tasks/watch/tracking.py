"""Following things through a video: faces tracked across frames (OpenCV's
Haar cascade detections linked by overlap, CPU), motion (CPU), and objects
with Ultralytics' tracker on a GPU."""

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


@task("tracking.faces", category="watch", capabilities=["video", "vision"], gpu="T4", timeout=1800,
      pipe={"path": "video_path"})
def tracking_faces(video_path: str, fps: float = 5.0, min_size: int = 30) -> Tracks:
    """Detects faces in sampled frames (OpenCV Haar cascade) and links them into tracks over time.

    Runs on CPU; the seed lists it for a T4."""
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


@task("motion.detect", category="watch", capabilities=["video"], timeout=1800, pipe={"path": "video_path"})
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


class ObjectTrackTimes(Track):
    label: str


class TimedTracks(TypedDict):
    tracks: list[ObjectTrackTimes]
    frames: int


@task("tracking.objects", category="watch", capabilities=["video", "vision"], gpu="T4", timeout=3600,
      pipe={"path": "video_path"})
def tracking_objects(video_path: str, fps: float = 5.0, confidence: float = 0.3, model: str = "yolov8n.pt") -> TimedTracks:
    """Tracks objects through a video (YOLO + ByteTrack on frames sampled at `fps`): each track's label, span in seconds and sightings."""
    if not 0 < fps <= 30:
        raise TaskError("`fps` must be above 0 and at most 30")
    from .. import media
    from ..see.yolo import track_objects

    native = float(media.probe(resolve(video_path, "video_path")).get("fps") or 25.0)
    found = track_objects("tracking.objects", video_path, model, confidence, max(1, round(native / fps)))
    tracks: list[ObjectTrackTimes] = []
    for t in found["tracks"]:
        sightings: list[Sighting] = [{"time": round(f["frame"] / native, 3), "box": f["box"]} for f in t["frames"]]
        tracks.append({"id": t["id"], "label": t["label"], "start": sightings[0]["time"], "end": sightings[-1]["time"],
                       "sightings": sightings})
    return {"tracks": tracks, "frames": found["frames"]}
