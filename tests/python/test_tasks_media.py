"""The ffmpeg tasks on small generated media (a numpy tone, an ffmpeg test video)."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from shared.tasks import TaskError, media
from shared.tasks.transform.media import audio_extract, chunk_audio, chunk_video, convert_audio, frames_extract


def tone(path, seconds=5.0, rate=22050, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.4 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


@pytest.fixture
def video(work):
    media.run(["-f", "lavfi", "-i", "testsrc=duration=4:size=160x120:rate=10",
               "-f", "lavfi", "-i", "sine=frequency=440:duration=4", "-shortest",
               "-c:v", "mpeg4", "-c:a", "aac", str(work / "clip.mp4")], "make a test video")
    return "clip.mp4"


def test_convert_audio(work):
    tone(work / "tone.wav")
    out = convert_audio("tone.wav", format="mp3", sample_rate=16000)
    assert out["path"] == "tone.16k.mp3" and out["format"] == "mp3"
    assert out["duration"] == pytest.approx(5.0, abs=0.1)
    out = convert_audio("tone.wav", format="flac", sample_rate=8000, channels=2, output_name="t.flac")
    assert (work / "t.flac").stat().st_size > 0
    with pytest.raises(TaskError, match="no such file"):
        convert_audio("nope.wav")
    (work / "junk.wav").write_bytes(b"RIFF....junk")
    with pytest.raises(TaskError):
        convert_audio("junk.wav")
    with pytest.raises(TaskError, match="sample_rate"):
        convert_audio("tone.wav", sample_rate=100)


def test_chunk_audio_with_offsets(work):
    tone(work / "tone.wav", seconds=5.0)
    out = chunk_audio("tone.wav", seconds=2.0, overlap=0.5)
    spans = [(c["start"], c["end"]) for c in out["chunks"]]
    assert spans == [(0.0, 2.0), (1.5, 3.5), (3.0, 5.0)]
    for c in out["chunks"]:
        assert media.probe(work / c["path"])["duration"] == pytest.approx(c["end"] - c["start"], abs=0.05)
    with pytest.raises(TaskError, match="overlap"):
        chunk_audio("tone.wav", seconds=1, overlap=1)


def test_video_tasks(work, video):
    out = audio_extract(video)
    assert out["path"] == "clip.audio.wav" and out["duration"] == pytest.approx(4.0, abs=0.15)
    frames = frames_extract(video, fps=2)["frames"]
    assert len(frames) == 8 and frames[1]["time"] == 0.5
    assert all((work / f["path"]).stat().st_size > 0 for f in frames)
    chunks = chunk_video(video, seconds=3)["chunks"]
    assert [(c["start"], c["end"]) for c in chunks] == [(0.0, 3.0), (3.0, 4.0)]
    tone(work / "tone.wav", seconds=1)
    with pytest.raises(TaskError, match="has no video stream"):
        frames_extract("tone.wav")
