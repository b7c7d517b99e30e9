"""Audio and video conversions with ffmpeg (the system's, or imageio-ffmpeg's)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from typing_extensions import TypedDict

from .. import media
from ..context import output, relative, resolve
from ..decorator import task
from ..errors import TaskError

AudioFormat = Literal["wav", "mp3", "ogg", "flac", "m4a"]
_CODECS = {"wav": ["-c:a", "pcm_s16le"], "mp3": ["-c:a", "libmp3lame"], "ogg": ["-c:a", "libvorbis"],
           "flac": ["-c:a", "flac"], "m4a": ["-c:a", "aac"]}


class Audio(TypedDict):
    path: str
    format: str
    duration: float | None
    sampleRate: int
    channels: int


def _stem(p: Path) -> str:
    return p.stem or "out"


@task("convert.audio", category="transform", capabilities=["ffmpeg"], timeout=1800, pipe={"path": "path"})
def convert_audio(path: str, format: AudioFormat = "wav", sample_rate: int = 16000, channels: int = 1,
                  output_name: str | None = None) -> Audio:
    """Converts audio (or a video's audio track) to another format, sample rate and channel count."""
    src = resolve(path)
    if not 8000 <= sample_rate <= 192000:
        raise TaskError("`sample_rate` must be between 8000 and 192000")
    if channels not in (1, 2):
        raise TaskError("`channels` must be 1 or 2")
    info = media.probe(src)
    if not info["audio"]:
        raise TaskError(f"`path` {path}: has no audio stream")
    dest = output(output_name or f"{_stem(src)}.{sample_rate // 1000}k.{format}")
    if dest.resolve() == src.resolve():
        raise TaskError("the output would overwrite the input; give another `output_name`")
    media.run(["-i", str(src), "-vn", "-ar", str(sample_rate), "-ac", str(channels), *_CODECS[format], str(dest)],
              f"convert.audio {path}")
    return {"path": relative(dest), "format": format, "duration": media.probe(dest)["duration"],
            "sampleRate": sample_rate, "channels": channels}


@task("audio.extract", category="transform", capabilities=["ffmpeg"], timeout=1800, pipe={"path": "path"})
def audio_extract(path: str, format: AudioFormat = "wav", sample_rate: int = 16000) -> Audio:
    """Extracts a video's audio track (mono, `sample_rate`), e.g. for transcription."""
    src = resolve(path)
    info = media.probe(src)
    if not info["audio"]:
        raise TaskError(f"`path` {path}: has no audio stream")
    dest = output(f"{_stem(src)}.audio.{format}")
    media.run(["-i", str(src), "-vn", "-ar", str(sample_rate), "-ac", "1", *_CODECS[format], str(dest)],
              f"audio.extract {path}")
    return {"path": relative(dest), "format": format, "duration": media.probe(dest)["duration"],
            "sampleRate": sample_rate, "channels": 1}


class Segment(TypedDict):
    index: int
    path: str
    start: float
    end: float


class Segments(TypedDict):
    chunks: list[Segment]
    duration: float


def _segments(path: str, seconds: float, overlap: float, kind: str) -> Segments:
    src = resolve(path)
    if seconds <= 0:
        raise TaskError("`seconds` must be positive")
    if not 0 <= overlap < seconds:
        raise TaskError("`overlap` must be at least 0 and smaller than `seconds`")
    info = media.probe(src)
    duration = info["duration"]
    if not duration:
        raise TaskError(f"`path` {path}: its duration is unknown")
    if kind == "audio" and not info["audio"]:
        raise TaskError(f"`path` {path}: has no audio stream")
    if kind == "video" and not info["video"]:
        raise TaskError(f"`path` {path}: has no video stream")
    ext = src.suffix or (".wav" if kind == "audio" else ".mp4")
    chunks: list[Segment] = []
    start, i, step = 0.0, 0, seconds - overlap
    while start < duration - 1e-3:
        end = min(start + seconds, duration)
        dest = output(f"{_stem(src)}.{kind}-chunks/{i:04d}{ext}")
        # Re-encode rather than stream-copy: cuts land exactly, not on keyframes.
        args = ["-ss", f"{start:.3f}", "-i", str(src), "-t", f"{end - start:.3f}"]
        args += ["-vn"] if kind == "audio" else []
        media.run([*args, str(dest)], f"chunk.{kind} {path} [{start:.1f}s-{end:.1f}s]")
        chunks.append({"index": i, "path": relative(dest), "start": round(start, 3), "end": round(end, 3)})
        if end >= duration:
            break
        start += step
        i += 1
    return {"chunks": chunks, "duration": duration}


@task("chunk.audio", category="transform", capabilities=["ffmpeg"], timeout=1800, pipe={"path": "path"})
def chunk_audio(path: str, seconds: float = 30.0, overlap: float = 0.0) -> Segments:
    """Cuts audio into `seconds`-long pieces overlapping by `overlap` (with their time offsets)."""
    return _segments(path, seconds, overlap, "audio")


@task("chunk.video", category="transform", capabilities=["ffmpeg"], timeout=3600, pipe={"path": "path"})
def chunk_video(path: str, seconds: float = 60.0, overlap: float = 0.0) -> Segments:
    """Cuts video into `seconds`-long pieces overlapping by `overlap` (with their time offsets)."""
    return _segments(path, seconds, overlap, "video")


class Converted(TypedDict):
    path: str
    format: str
    duration: float | None


@task("convert.video", category="transform", capabilities=["ffmpeg"], timeout=3600, pipe={"path": "path"})
def convert_video(path: str, format: Literal["mp4", "webm", "mkv"] = "mp4", height: int | None = None) -> Converted:
    """Re-encodes a video (H.264/AAC in mp4, VP9/Opus in webm), optionally scaled to `height`."""
    src = resolve(path)
    if not media.probe(src)["video"]:
        raise TaskError(f"`path` {path}: has no video stream")
    codecs = {"mp4": ["-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac"],
              "webm": ["-c:v", "libvpx-vp9", "-c:a", "libopus"],
              "mkv": ["-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac"]}[format]
    scale = ["-vf", f"scale=-2:{height}"] if height else []
    dest = output(f"{_stem(src)}.converted.{format}")
    media.run(["-i", str(src), *scale, *codecs, str(dest)], f"convert.video {path}")
    return {"path": relative(dest), "format": format, "duration": media.probe(dest)["duration"]}


class Frame(TypedDict):
    path: str
    time: float


class Frames(TypedDict):
    frames: list[Frame]


@task("frames.extract", category="transform", capabilities=["ffmpeg"], timeout=1800, pipe={"path": "path"})
def frames_extract(path: str, fps: float = 1.0, max_frames: int = 300, width: int | None = None) -> Frames:
    """Samples `fps` frames per second of a video as JPEG files (at most `max_frames`)."""
    src = resolve(path)
    if not 0 < fps <= 60:
        raise TaskError("`fps` must be above 0 and at most 60")
    if not media.probe(src)["video"]:
        raise TaskError(f"`path` {path}: has no video stream")
    folder = output(f"{_stem(src)}.frames/x").parent
    vf = f"fps={fps}" + (f",scale={width}:-2" if width else "")
    media.run(["-i", str(src), "-vf", vf, "-frames:v", str(max_frames), "-q:v", "3", str(folder / "%05d.jpg")],
              f"frames.extract {path}")
    files = sorted(folder.glob("*.jpg"))
    return {"frames": [{"path": relative(f), "time": round(i / fps, 3)} for i, f in enumerate(files)]}
