"""Neural voices that run on the backend's own GPU: Chatterbox (Resemble AI,
voice cloning from a reference clip) and Sesame's CSM-1B (through
transformers). Their weights come from the model hub, unreachable here: the
code is real and the tests cover the checks before the model call."""

from __future__ import annotations

import uuid
from functools import lru_cache

from typing_extensions import TypedDict

from ..context import output, relative, resolve
from ..decorator import task
from ..errors import TaskError, require

#: Characters at most per call: both models degrade (and slow) on long texts.
MAX_CHARS = 2000


class Voice(TypedDict):
    path: str
    seconds: float
    sample_rate: int


def check_text(text: str) -> None:
    if not text.strip():
        raise TaskError("`text` is empty: nothing to say")
    if len(text) > MAX_CHARS:
        raise TaskError(f"`text` has {len(text)} characters, over the limit of {MAX_CHARS}: split it (chunk.text)")


def _device(task_name: str) -> str:
    torch = require(task_name, "torch", "torch")
    return "cuda" if torch.cuda.is_available() else "cpu"


def _save(wav, rate: int) -> Voice:
    """Writes a mono waveform (a tensor or array of floats in -1..1) as a 16-bit WAV."""
    import wave

    import numpy as np

    samples = np.asarray(wav.detach().cpu().numpy() if hasattr(wav, "detach") else wav, dtype=np.float32).reshape(-1)
    dest = output(f"speech-{uuid.uuid4().hex[:8]}.wav")
    with wave.open(str(dest), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return {"path": relative(dest), "seconds": round(len(samples) / rate, 3), "sample_rate": rate}


@lru_cache(maxsize=1)
def _chatterbox():
    tts = require("chatterbox.synthesize", "chatterbox-tts", "chatterbox.tts")
    return tts.ChatterboxTTS.from_pretrained(device=_device("chatterbox.synthesize"))


@task("chatterbox.synthesize", category="speak", capabilities=["tts"], gpu="T4", timeout=600, pipe={"text": "text"})
def chatterbox_synthesize(text: str, voice_path: str | None = None, exaggeration: float = 0.5,
                          cfg_weight: float = 0.5) -> Voice:
    """Speaks `text` with Chatterbox; `voice_path` (a WAV in the working folder) is the voice to clone."""
    check_text(text)
    if not 0 <= exaggeration <= 2:
        raise TaskError("`exaggeration` must be between 0 and 2")
    if not 0 <= cfg_weight <= 1:
        raise TaskError("`cfg_weight` must be between 0 and 1")
    prompt = str(resolve(voice_path, "voice_path")) if voice_path else None
    model = _chatterbox()
    wav = model.generate(text, audio_prompt_path=prompt, exaggeration=exaggeration, cfg_weight=cfg_weight)
    return _save(wav, int(model.sr))


@lru_cache(maxsize=1)
def _sesame(model_id: str):
    transformers = require("sesame.synthesize", "transformers", "transformers")
    device = _device("sesame.synthesize")
    processor = transformers.AutoProcessor.from_pretrained(model_id)
    model = transformers.CsmForConditionalGeneration.from_pretrained(model_id).to(device)
    return model, processor, device


@task("sesame.synthesize", category="speak", capabilities=["tts"], gpu="T4", timeout=600, pipe={"text": "text"})
def sesame_synthesize(text: str, speaker: int = 0, model_id: str = "sesame/csm-1b", max_seconds: float = 30.0) -> Voice:
    """Speaks `text` with Sesame's CSM-1B conversational voice (`speaker`: the speaker id, 0 or 1)."""
    check_text(text)
    if speaker not in (0, 1):
        raise TaskError("`speaker` must be 0 or 1")
    if not 0 < max_seconds <= 120:
        raise TaskError("`max_seconds` must be above 0 and at most 120")
    model, processor, device = _sesame(model_id)
    inputs = processor(f"[{speaker}]{text}", add_special_tokens=True).to(device)
    # CSM makes 12.5 audio frames a second.
    audio = model.generate(**inputs, output_audio=True, max_new_tokens=int(max_seconds * 12.5))
    return _save(audio[0], 24_000)
