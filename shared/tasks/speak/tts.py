"""Text to speech: ElevenLabs and OpenAI over HTTP, espeak-ng locally (Piper,
Chatterbox and Sesame in their own modules)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid

from typing_extensions import TypedDict

from ..context import output, relative
from ..decorator import task
from ..errors import TaskError, require


class Speech(TypedDict):
    path: str
    bytes: int
    format: str


@task("elevenlabs.synthesize", category="speak", capabilities=["tts", "network"], timeout=300,
      pipe={"text": "text"}, aliases=["elevenlabs.speak"])
def elevenlabs_synthesize(text: str, voice_id: str = "21m00Tcm4TlvDq8ikWAM", model: str = "eleven_multilingual_v2") -> Speech:
    """Speaks `text` with an ElevenLabs voice into an MP3 (ELEVENLABS_API_KEY; ELEVENLABS_BASE_URL for a proxy)."""
    import httpx

    key = os.environ.get("ELEVENLABS_API_KEY")
    if not key:
        raise TaskError("elevenlabs.synthesize: ELEVENLABS_API_KEY is not set on this backend (Modal: the elevenlabs-secret)")
    base = os.environ.get("ELEVENLABS_BASE_URL", "https://api.elevenlabs.io").rstrip("/")
    try:
        r = httpx.post(f"{base}/v1/text-to-speech/{voice_id}", headers={"xi-api-key": key, "accept": "audio/mpeg"},
                       json={"text": text, "model_id": model}, timeout=120.0)
    except httpx.TransportError as e:
        raise TaskError(f"elevenlabs.synthesize: {e}", retryable=True) from None
    if r.status_code >= 400:
        raise TaskError(f"elevenlabs.synthesize: the API answered {r.status_code}: {r.text[:200]}",
                        retryable=r.status_code == 429 or r.status_code >= 500)
    dest = output(f"speech-{uuid.uuid4().hex[:8]}.mp3")
    dest.write_bytes(r.content)
    return {"path": relative(dest), "bytes": len(r.content), "format": "mp3"}


@task("openai_tts.synthesize", category="speak", capabilities=["tts", "network"], timeout=300,
      pipe={"text": "text"}, aliases=["openai.speak"])
def openai_tts_synthesize(text: str, voice: str = "alloy", model: str = "gpt-4o-mini-tts") -> Speech:
    """Speaks `text` with an OpenAI voice into an MP3 (OPENAI_BASE_URL honoured)."""
    openai = require("openai_tts.synthesize", "openai", "openai")
    client = openai.OpenAI(max_retries=0, timeout=120.0)
    try:
        audio = client.audio.speech.create(model=model, voice=voice, input=text, response_format="mp3")
    except openai.APIStatusError as e:
        raise TaskError(f"openai_tts.synthesize: the API answered {e.status_code}: {e.message}",
                        retryable=e.status_code == 429 or e.status_code >= 500) from None
    except openai.APIConnectionError as e:
        raise TaskError(f"openai_tts.synthesize: cannot reach the API: {e}", retryable=True) from None
    data = audio.read()
    dest = output(f"speech-{uuid.uuid4().hex[:8]}.mp3")
    dest.write_bytes(data)
    return {"path": relative(dest), "bytes": len(data), "format": "mp3"}


@task("espeak.speak", category="speak", capabilities=["tts"], timeout=120)
def espeak_speak(text: str, voice: str = "en", speed: int = 170) -> Speech:
    """Speaks `text` with espeak-ng (a local formant synthesiser) into a WAV file."""
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if not exe:
        raise TaskError("espeak.speak: espeak-ng is not installed on this backend (Debian: apt-get install espeak-ng)")
    if not 80 <= speed <= 450:
        raise TaskError("`speed` must be between 80 and 450 words per minute")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_+/-]{0,31}", voice):
        raise TaskError(f"`voice` {voice!r} is not an espeak voice name (e.g. en, en-us, fr+f2)")
    dest = output(f"speech-{uuid.uuid4().hex[:8]}.wav")
    # The text goes in on stdin, never as an argument: a text starting with
    # '-' must not be read as an option.
    done = subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(dest), "--stdin"], input=text,
                          capture_output=True, text=True, timeout=100)
    if done.returncode != 0:
        raise TaskError(f"espeak.speak: {done.stderr.strip()[:200]}")
    return {"path": relative(dest), "bytes": dest.stat().st_size, "format": "wav"}
