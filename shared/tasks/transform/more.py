"""More conversions: subtitles from segments, loudness normalisation,
thumbnails, PDF text."""

from __future__ import annotations

from typing import Literal

from typing_extensions import TypedDict

from .. import media
from ..context import output, relative, resolve
from ..decorator import task
from ..errors import TaskError, require


class Subtitles(TypedDict):
    path: str
    cues: int


def _stamp(t: float, sep: str) -> str:
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


@task("subtitles.write", category="transform", timeout=60)
def subtitles_write(segments: list[dict], format: Literal["srt", "vtt"] = "srt", name: str = "subtitles") -> Subtitles:
    """Writes timed segments (`start`, `end`, `text`, e.g. whisper.transcribe's) as SRT or WebVTT."""
    cues = []
    for i, seg in enumerate(segments):
        try:
            start, end, text = float(seg["start"]), float(seg["end"]), str(seg["text"]).strip()
        except (KeyError, TypeError, ValueError):
            raise TaskError(f"`segments[{i}]` needs `start`, `end` (seconds) and `text`") from None
        if end < start:
            raise TaskError(f"`segments[{i}]` ends before it starts")
        if text:
            cues.append((start, end, text))
    if not all(c.isalnum() or c in "-_" for c in name):
        raise TaskError("`name` must be letters, digits, '-' or '_'")
    if format == "srt":
        body = "\n".join(f"{i + 1}\n{_stamp(s, ',')} --> {_stamp(e, ',')}\n{t}\n" for i, (s, e, t) in enumerate(cues))
    else:
        body = "WEBVTT\n\n" + "\n".join(f"{_stamp(s, '.')} --> {_stamp(e, '.')}\n{t}\n" for s, e, t in cues)
    dest = output(f"{name}.{format}")
    dest.write_text(body, encoding="utf-8")
    return {"path": relative(dest), "cues": len(cues)}


class Normalized(TypedDict):
    path: str
    targetLufs: float


@task("audio.normalize", category="transform", capabilities=["ffmpeg"], timeout=1800)
def audio_normalize(path: str, target_lufs: float = -16.0, format: Literal["wav", "mp3", "flac"] = "wav") -> Normalized:
    """Normalises loudness to `target_lufs` (EBU R128, ffmpeg loudnorm), e.g. before publishing a podcast."""
    if not -70 <= target_lufs <= -5:
        raise TaskError("`target_lufs` must be between -70 and -5")
    src = resolve(path)
    if not media.probe(src)["audio"]:
        raise TaskError(f"`path` {path}: has no audio stream")
    dest = output(f"{src.stem}.normalized.{format}")
    media.run(["-i", str(src), "-vn", "-af", f"loudnorm=I={target_lufs}:TP=-1.5:LRA=11", str(dest)], f"audio.normalize {path}")
    return {"path": relative(dest), "targetLufs": target_lufs}


class Thumbnail(TypedDict):
    path: str
    time: float


@task("video.thumbnail", category="transform", capabilities=["ffmpeg"], timeout=300)
def video_thumbnail(path: str, time: float | None = None, width: int = 640) -> Thumbnail:
    """One frame of a video as a JPEG (at `time` seconds; default: a third of the way in)."""
    src = resolve(path)
    info = media.probe(src)
    if not info["video"]:
        raise TaskError(f"`path` {path}: has no video stream")
    duration = info["duration"] or 0.0
    at = duration / 3 if time is None else time
    if at < 0 or (duration and at > duration):
        raise TaskError(f"`time` {at} is outside the video (0-{duration:.2f} s)")
    dest = output(f"{src.stem}.thumb.jpg")
    media.run(["-ss", f"{at:.3f}", "-i", str(src), "-frames:v", "1", "-vf", f"scale={width}:-2", "-q:v", "3", str(dest)],
              f"video.thumbnail {path}")
    return {"path": relative(dest), "time": round(at, 3)}


class PdfText(TypedDict):
    text: str
    pages: int


@task("pdf.text", category="transform", timeout=300)
def pdf_text(path: str, max_pages: int = 500) -> PdfText:
    """Extracts the text of a PDF, page by page (pypdf)."""
    PdfReader = require("pdf.text", "pypdf", "pypdf").PdfReader
    PdfReadError = require("pdf.text", "pypdf", "pypdf.errors").PdfReadError
    src = resolve(path)
    try:
        reader = PdfReader(str(src))
        pages = reader.pages[:max_pages]
        text = "\n\n".join((p.extract_text() or "").strip() for p in pages)
    except PdfReadError as e:
        raise TaskError(f"`path` {path}: not a readable PDF: {e}") from None
    return {"text": text, "pages": len(pages)}
