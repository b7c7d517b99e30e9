"""analyze.video: the seed's "full analysis pipeline" step. It merges what
the steps before it found — scenes, objects, faces, image embeddings, a
transcript — into one timeline per scene and a summary. It takes the object
a step with several dependencies receives (their results keyed by step id)
and recognises each result by its shape, not by its step's name."""

from __future__ import annotations

import math
from typing import Any

from typing_extensions import TypedDict

from ..decorator import task
from ..errors import TaskError


class ObjectCount(TypedDict):
    label: str
    count: int
    scenes: int


class SceneReport(TypedDict):
    index: int
    start: float | None
    end: float | None
    keyframe: str | None
    objects: dict[str, int]
    faces: int
    transcript: str
    similarityToPrevious: float | None


class FaceReport(TypedDict):
    total: int
    maxInScene: int
    scenesWithFaces: int


class TranscriptReport(TypedDict):
    text: str
    language: str | None
    words: int
    segments: int


class Analysis(TypedDict):
    summary: str
    duration: float | None
    scenes: list[SceneReport]
    objects: list[ObjectCount]
    faces: FaceReport
    transcript: TranscriptReport | None
    sources: dict[str, str]


def kind_of(result: Any) -> str:
    """What a step's result is, by its shape: scenes, detections, faces,
    embeddings, transcript, or other."""
    if not isinstance(result, dict):
        return "other"
    if isinstance(result.get("frames"), list) and result["frames"] and isinstance(result["frames"][0], dict):
        first = result["frames"][0]
        return next((k for k, key in (("detections", "detections"), ("faces", "faces"), ("embeddings", "vector"))
                     if key in first), "other")
    if isinstance(result.get("scenes"), list):
        return "scenes"
    if isinstance(result.get("detections"), list):
        return "detections"
    if isinstance(result.get("faces"), list):
        return "faces"
    if isinstance(result.get("vector"), list):
        return "embeddings"
    if isinstance(result.get("segments"), list) and isinstance(result.get("text"), str):
        return "transcript"
    return "other"


def _frames(result: dict) -> list[dict]:
    """A result's per-scene entries: its `frames`, or itself as scene 0."""
    frames = result.get("frames")
    return [f for f in frames if isinstance(f, dict)] if isinstance(frames, list) else [{"index": 0, **result}]


def _cosine(a: list[float], b: list[float]) -> float | None:
    if len(a) != len(b) or not a:
        return None
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return round(dot / norm, 4) if norm else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@task("analyze.video", category="watch", capabilities=["video", "vision"], gpu="T4", timeout=300)
def analyze_video(min_confidence: float = 0.0, **results: dict[str, Any]) -> Analysis:
    """Merges scenes, object detections, faces, image embeddings and a transcript into a per-scene timeline and a summary.

    Takes the results of the steps before it keyed by their ids (what a step with several
    `dependsOn` and no `input` receives); each is recognised by its shape."""
    if not 0 <= min_confidence < 1:
        raise TaskError("`min_confidence` must be at least 0 and below 1")
    if not results:
        raise TaskError("analyze.video: no results to merge; give it steps to depend on (their results keyed by id)")
    sources = {step: kind_of(r) for step, r in results.items()}
    by_kind: dict[str, list[dict]] = {}
    for step, r in results.items():
        by_kind.setdefault(sources[step], []).append(r)

    # The scenes: scenes.detect's own list, else the frames any per-scene result carries.
    scenes: dict[int, SceneReport] = {}

    def scene(entry: dict, fallback: int) -> SceneReport:
        index = entry.get("index") if isinstance(entry.get("index"), int) else fallback
        s = scenes.setdefault(index, {"index": index, "start": None, "end": None, "keyframe": None, "objects": {},
                                      "faces": 0, "transcript": "", "similarityToPrevious": None})
        s["start"] = s["start"] if s["start"] is not None else _num(entry.get("start"))
        s["end"] = s["end"] if s["end"] is not None else _num(entry.get("end"))
        s["keyframe"] = s["keyframe"] or (entry.get("keyframe") if isinstance(entry.get("keyframe"), str) else None)
        return s

    for r in by_kind.get("scenes", []):
        for i, entry in enumerate(r["scenes"]):
            if isinstance(entry, dict):
                scene(entry, i)

    objects: dict[str, list[int]] = {}
    for r in by_kind.get("detections", []):
        for i, frame in enumerate(_frames(r)):
            s = scene(frame, i)
            for d in frame.get("detections") or []:
                label, conf = d.get("label"), _num(d.get("confidence"))
                if not isinstance(label, str) or (conf is not None and conf < min_confidence):
                    continue
                s["objects"][label] = s["objects"].get(label, 0) + 1
                objects.setdefault(label, [0, 0])[0] += 1
    for label, counts in objects.items():
        counts[1] = sum(1 for s in scenes.values() if label in s["objects"])

    for r in by_kind.get("faces", []):
        for i, frame in enumerate(_frames(r)):
            s = scene(frame, i)
            s["faces"] = max(s["faces"], len(frame.get("faces") or []))

    vectors: dict[int, list[float]] = {}
    for r in by_kind.get("embeddings", []):
        for i, frame in enumerate(_frames(r)):
            if isinstance(frame.get("vector"), list):
                vectors[scene(frame, i)["index"]] = frame["vector"]

    ordered = [scenes[k] for k in sorted(scenes)]
    for prev, cur in zip(ordered, ordered[1:]):
        if prev["index"] in vectors and cur["index"] in vectors:
            cur["similarityToPrevious"] = _cosine(vectors[prev["index"]], vectors[cur["index"]])

    transcript: TranscriptReport | None = None
    for r in by_kind.get("transcript", []):
        segments = [s for s in r["segments"] if isinstance(s, dict)]
        for seg in segments:
            start, end = _num(seg.get("start")), _num(seg.get("end"))
            mid = (start + end) / 2 if start is not None and end is not None else start
            home = next((s for s in ordered if mid is not None and s["start"] is not None and s["end"] is not None
                         and s["start"] <= mid < s["end"]), ordered[-1] if ordered else None)
            if home is not None and isinstance(seg.get("text"), str):
                home["transcript"] = f"{home['transcript']} {seg['text'].strip()}".strip()
        text = r["text"].strip()
        language = r.get("language") if isinstance(r.get("language"), str) else None
        transcript = {"text": text, "language": language, "words": len(text.split()), "segments": len(segments)}

    ends = [s["end"] for s in ordered if s["end"] is not None]
    ends += [e for r in by_kind.get("transcript", []) for seg in r["segments"] if isinstance(seg, dict)
             for e in [_num(seg.get("end"))] if e is not None]
    duration = round(max(ends), 3) if ends else None
    counted = sorted(({"label": k, "count": v[0], "scenes": v[1]} for k, v in objects.items()),
                     key=lambda o: (-o["count"], o["label"]))
    faces: FaceReport = {"total": sum(s["faces"] for s in ordered),
                         "maxInScene": max((s["faces"] for s in ordered), default=0),
                         "scenesWithFaces": sum(1 for s in ordered if s["faces"])}
    return {"summary": _summary(ordered, duration, counted, faces, transcript), "duration": duration,
            "scenes": ordered, "objects": counted, "faces": faces, "transcript": transcript, "sources": sources}


def _summary(scenes: list[SceneReport], duration: float | None, objects: list[ObjectCount], faces: FaceReport,
             transcript: TranscriptReport | None) -> str:
    parts = [f"{len(scenes)} scene{'s' if len(scenes) != 1 else ''}"
             + (f" over {duration:g} s" if duration is not None else "")]
    if objects:
        parts.append("objects: " + ", ".join(f"{o['label']} ×{o['count']}" for o in objects[:5]))
    parts.append(f"faces in {faces['scenesWithFaces']} scene{'s' if faces['scenesWithFaces'] != 1 else ''}")
    if transcript is not None:
        lang = f" ({transcript['language']})" if transcript["language"] else ""
        parts.append(f"{transcript['words']} words spoken{lang}")
    return "; ".join(parts) + "."
