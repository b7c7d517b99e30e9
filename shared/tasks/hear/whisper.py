"""Speech to text with faster-whisper. Heavy (CTranslate2 and model weights):
its real test runs under `just test-heavy`; `just test` covers its checks."""

from __future__ import annotations

import os
from functools import lru_cache

from typing_extensions import TypedDict

from ..context import resolve
from ..decorator import task
from ..errors import require
from ..types import ChunkConfig


class Segment(TypedDict):
    start: float
    end: float
    text: str


class Transcript(TypedDict):
    text: str
    language: str
    segments: list[Segment]


@lru_cache(maxsize=2)
def _model(name: str):
    WhisperModel = require("whisper.transcribe", "faster-whisper", "faster_whisper").WhisperModel
    device = os.environ.get("DWA_WHISPER_DEVICE", "auto")
    return WhisperModel(name, device=device, compute_type="int8" if device in ("cpu", "auto") else "float16")


@task("whisper.transcribe", category="hear", capabilities=["asr"], gpu="T4", timeout=1800,
      chunk=ChunkConfig(input="audio_path", default_size=30.0, overlap=0.0, merge="concat_segments", kind="audio"))
def whisper_transcribe(audio_path: str, language: str | None = None, model: str = "tiny.en") -> Transcript:
    """Transcribes speech with timestamps (`model`: a size name or a local model folder)."""
    path = resolve(audio_path, "audio_path")
    segments, info = _model(model).transcribe(str(path), language=language, vad_filter=False)
    segs: list[Segment] = [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text.strip()} for s in segments]
    return {"text": " ".join(s["text"] for s in segs).strip(), "language": info.language, "segments": segs}
