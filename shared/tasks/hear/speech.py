"""Speech tasks around the transcription: who speaks when (pyannote), where speech is (Silero VAD, ONNX on CPU), and
transcription through the OpenAI API."""

from __future__ import annotations

import os

from typing_extensions import TypedDict

from ..context import resolve
from ..decorator import task
from ..errors import TaskError, require
from ..types import ChunkConfig


class Turn(TypedDict):
    start: float
    end: float
    speaker: str


class Diarization(TypedDict):
    speakers: list[str]
    segments: list[Turn]


@task("diarize.speakers", category="hear", capabilities=["asr"], gpu="T4", timeout=1800,
      pipe={"path": "audio_path"}, aliases=["speakers.diarize"])
def diarize_speakers(audio_path: str, num_speakers: int | None = None,
                     model_id: str = "pyannote/speaker-diarization-3.1") -> Diarization:
    """Finds who speaks when (pyannote.audio; needs HF_TOKEN for the gated model)."""
    if num_speakers is not None and num_speakers < 1:
        raise TaskError("`num_speakers` must be at least 1")
    path = resolve(audio_path, "audio_path")
    Pipeline = require("diarize.speakers", "pyannote.audio", "pyannote.audio").Pipeline
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise TaskError("diarize.speakers: HF_TOKEN is not set (the pyannote model is gated)")
    pipeline = Pipeline.from_pretrained(model_id, use_auth_token=token)
    result = pipeline(str(path), num_speakers=num_speakers)
    turns: list[Turn] = [{"start": round(t.start, 3), "end": round(t.end, 3), "speaker": spk}
                         for t, _, spk in result.itertracks(yield_label=True)]
    return {"speakers": sorted({t["speaker"] for t in turns}), "segments": turns}


class Speech(TypedDict):
    start: float
    end: float


class Activity(TypedDict):
    segments: list[Speech]
    speechSeconds: float


@task("vad.detect", category="hear", capabilities=["asr"], timeout=600,
      chunk=ChunkConfig(input="audio_path", default_size=300.0, merge="concat_segments", kind="audio"))
def vad_detect(audio_path: str, threshold: float = 0.5, min_silence_ms: int = 300) -> Activity:
    """Finds where someone speaks (Silero VAD; CPU)."""
    if not 0 < threshold < 1:
        raise TaskError("`threshold` must be between 0 and 1")
    path = resolve(audio_path, "audio_path")
    torch = require("vad.detect", "torch", "torch")
    silero_vad = require("vad.detect", "silero-vad", "silero_vad")
    get_speech_timestamps, load_silero_vad = silero_vad.get_speech_timestamps, silero_vad.load_silero_vad
    import subprocess

    import numpy as np

    from .. import media

    # Decoded by ffmpeg (silero's own reader needs torchaudio).
    done = subprocess.run([media.ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path), "-vn", "-ac", "1", "-ar", "16000",
                           "-f", "s16le", "-"], capture_output=True, timeout=600)
    if done.returncode != 0:
        raise TaskError(f"`audio_path` {audio_path}: cannot decode its audio")
    wav = torch.from_numpy(np.frombuffer(done.stdout, dtype="<i2").astype(np.float32) / 32768.0)
    model = load_silero_vad(onnx=True)
    stamps = get_speech_timestamps(wav, model, threshold=threshold, min_silence_duration_ms=min_silence_ms,
                                   return_seconds=True)
    segs: list[Speech] = [{"start": float(s["start"]), "end": float(s["end"])} for s in stamps]
    return {"segments": segs, "speechSeconds": round(sum(s["end"] - s["start"] for s in segs), 3)}


class ApiTranscript(TypedDict):
    text: str
    language: str | None
    segments: list[dict]


@task("openai.transcribe", category="hear", capabilities=["asr", "network"], timeout=900,
      chunk=ChunkConfig(input="audio_path", default_size=600.0, merge="concat_segments", kind="audio"))
def openai_transcribe(audio_path: str, model: str = "whisper-1", language: str | None = None) -> ApiTranscript:
    """Transcribes through the OpenAI audio API (OPENAI_BASE_URL honoured), with segment timestamps."""
    from ..think.openai_tasks import _call, _client

    path = resolve(audio_path, "audio_path")
    if path.stat().st_size > 25 * 1024 * 1024:
        raise TaskError(f"`audio_path` {audio_path} is over the API's 25 MB limit: chunk the step")
    client = _client("openai.transcribe")
    with open(path, "rb") as f:
        r = _call("openai.transcribe", lambda: client.audio.transcriptions.create(
            model=model, file=f, language=language, response_format="verbose_json"))
    segments = [{"start": float(s.start), "end": float(s.end), "text": s.text.strip()} for s in (r.segments or [])]
    return {"text": r.text.strip(), "language": getattr(r, "language", None), "segments": segments}
