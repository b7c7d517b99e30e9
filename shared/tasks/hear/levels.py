"""Loudness over time: CPU only (ffmpeg decodes, numpy measures)."""

from __future__ import annotations

import subprocess

from typing_extensions import TypedDict

from .. import media
from ..context import resolve
from ..decorator import task
from ..errors import TaskError
from ..types import ChunkConfig


class Level(TypedDict):
    start: float
    end: float
    db: float


class Levels(TypedDict):
    segments: list[Level]
    peakDb: float


@task("audio.levels", category="hear", capabilities=["ffmpeg"], timeout=600,
      chunk=ChunkConfig(input="path", default_size=60.0, merge="concat_segments", kind="audio"))
def audio_levels(path: str, window: float = 1.0) -> Levels:
    """Loudness (RMS, dBFS) of each `window` seconds of an audio file: where speech or silence is."""
    import numpy as np

    if not 0.01 <= window <= 3600:
        raise TaskError("`window` must be between 0.01 and 3600 seconds")
    src = resolve(path)
    rate = 16000
    done = subprocess.run([media.ffmpeg(), "-hide_banner", "-nostdin", "-i", str(src), "-vn", "-ac", "1", "-ar", str(rate),
                           "-f", "s16le", "-"], capture_output=True, timeout=600)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-2:])
        raise TaskError(f"`path` {path}: cannot decode its audio: {tail}")
    samples = np.frombuffer(done.stdout, dtype="<i2").astype(np.float64) / 32768.0
    if samples.size == 0:
        raise TaskError(f"`path` {path}: no audio samples")
    step = max(1, int(window * rate))
    segments: list[Level] = []
    for i in range(0, samples.size, step):
        block = samples[i : i + step]
        rms = float(np.sqrt(np.mean(block**2)))
        db = -120.0 if rms <= 1e-6 else round(20 * np.log10(rms), 2)
        segments.append({"start": round(i / rate, 3), "end": round((i + block.size) / rate, 3), "db": db})
    peak = float(np.max(np.abs(samples)))
    return {"segments": segments, "peakDb": -120.0 if peak <= 1e-6 else round(20 * np.log10(peak), 2)}
