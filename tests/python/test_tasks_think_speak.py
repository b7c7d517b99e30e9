"""The OpenAI tasks against a local fake of the OpenAI API (OPENAI_BASE_URL),
ElevenLabs against a fake of its API, and the checks the GPU tasks make
before they touch a model (their models cannot run here)."""

from __future__ import annotations

import importlib.util
import json
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from shared.tasks import TaskError
from shared.tasks.hear.whisper import whisper_transcribe
from shared.tasks.see.vision import florence_caption, yolo_detect
from shared.tasks.speak.tts import elevenlabs_synthesize
from shared.tasks.think.openai_tasks import openai_embed
from shared.tasks.hear.speech import openai_transcribe
from shared.tasks.see.cpu import image_describe
from shared.tasks.think.more import llm_answer, openai_translate
from shared.tasks.think.openai_tasks import (openai_chat, openai_chat_stream, openai_classify, openai_extract,
                                             openai_summarize)


def fake_api() -> FastAPI:
    app = FastAPI()
    app.state.seen = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.seen.append(body)
        user = body["messages"][-1]["content"]
        if user == "overload":
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}}, status_code=429)
        system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else ""
        content = body["messages"][-1]["content"]
        if isinstance(content, list):
            kinds = [c["type"] for c in content]
            answer = f"saw {kinds}" if content[1]["image_url"]["url"].startswith("data:image/png;base64,") else "no image"
        elif "Translate" in system:
            answer = user.upper()
        elif "Answer from these passages" in system:
            answer = "It is 42 [1]." if "[1] The answer is 42." in system else "I do not know."
        elif "JSON object" in system:
            answer = json.dumps({"name": "Ada", "year": 1815, "extra": 1})
        elif "exactly one of these labels" in system:
            answer = "Positive."
        elif "Summarise" in system:
            answer = "  A short summary.  "
        else:
            answer = f"echo: {user}"
        if body.get("stream"):
            def events():
                for piece in [answer[:3], answer[3:]]:
                    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await request.json()
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0]} for i, t in enumerate(body["input"])]
        return {"object": "list", "model": body["model"], "data": list(reversed(data)),
                "usage": {"prompt_tokens": 1, "total_tokens": 1}}

    @app.post("/v1/audio/transcriptions")
    async def transcribe(request: Request):
        body = await request.body()  # multipart: the file's bytes are in there
        heard = "RIFF" in body.decode("latin-1")
        return {"text": " heard " if heard else " nothing ", "language": "english", "duration": 1.0,
                "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": 1.0, "text": " heard", "tokens": [],
                              "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 1.0, "no_speech_prob": 0.0}]}

    @app.post("/v1/text-to-speech/{voice}")
    async def speak(voice: str, request: Request):
        if request.headers.get("xi-api-key") != "k":
            return JSONResponse({"detail": "bad key"}, status_code=401)
        body = await request.json()
        return Response(b"ID3" + body["text"].encode(), media_type="audio/mpeg")

    return app


@pytest.fixture(scope="module")
def api():
    app = fake_api()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake API did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield app, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def openai_env(api, monkeypatch):
    app, base = api
    monkeypatch.setenv("OPENAI_BASE_URL", f"{base}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    return app


def test_chat_answers_the_seed_shape_and_chat_stream_streams_pieces(openai_env):
    assert openai_chat("hi") == {"response": "echo: hi", "model": "gpt-4o-mini"}
    assert not openai_env.state.seen[-1].get("stream")
    assert list(openai_chat_stream("hi", system="be brief")) == ["ech", "o: hi"]
    assert openai_env.state.seen[-1]["stream"] is True
    assert openai_env.state.seen[-1]["messages"][0] == {"role": "system", "content": "be brief"}


def test_summarize_extract_classify(openai_env):
    assert openai_summarize("long text", max_words=20)["summary"] == "A short summary."
    assert "at most 20 words" in openai_env.state.seen[-1]["messages"][0]["content"]
    assert openai_extract("Ada was born in 1815", {"name": "who", "year": "when", "city": "where"}) == {
        "data": {"name": "Ada", "year": 1815, "city": None}}
    assert openai_classify("great!", ["negative", "positive"]) == {"label": "positive", "labels": ["negative", "positive"]}
    with pytest.raises(TaskError, match="empty"):
        openai_summarize("   ")


def test_translate_answer_embed_describe_transcribe(openai_env, work):
    assert openai_translate("bonjour", target="German") == {"text": "BONJOUR", "target": "German"}
    assert llm_answer("what?", ["The answer is 42."])["answer"] == "It is 42 [1]."
    with pytest.raises(TaskError, match="at least one passage"):
        llm_answer("what?", [])
    out = openai_embed(["ab", "abcd"])
    assert out["vectors"] == [[2.0, 1.0], [4.0, 1.0]], "ordered by index"
    (work / "p.png").write_bytes(b"\x89PNG fake")
    assert image_describe("p.png")["description"] == "saw ['text', 'image_url']"
    (work / "a.wav").write_bytes(b"RIFF" + b"\0" * 96)
    out = openai_transcribe("a.wav")
    assert out == {"text": "heard", "language": "english", "segments": [{"start": 0.0, "end": 1.0, "text": "heard"}]}


def test_api_errors_say_whether_to_retry(openai_env):
    with pytest.raises(TaskError, match="answered 429") as e:
        openai_summarize("overload")
    assert e.value.retryable is True


def test_elevenlabs(api, work, monkeypatch):
    _, base = api
    monkeypatch.setenv("ELEVENLABS_BASE_URL", base)
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    with pytest.raises(TaskError, match="ELEVENLABS_API_KEY is not set"):
        elevenlabs_synthesize("hello")
    monkeypatch.setenv("ELEVENLABS_API_KEY", "k")
    out = elevenlabs_synthesize("hello")
    assert out["format"] == "mp3" and (work / out["path"]).read_bytes() == b"ID3hello"
    monkeypatch.setenv("ELEVENLABS_API_KEY", "wrong")
    with pytest.raises(TaskError, match="answered 401") as e:
        elevenlabs_synthesize("hello")
    assert e.value.retryable is False


def test_gpu_tasks_check_their_input_before_the_model(work):
    with pytest.raises(TaskError, match="confidence"):
        yolo_detect("x.jpg", confidence=2)
    with pytest.raises(TaskError, match="`image_path` x.jpg: no such file"):
        yolo_detect("x.jpg")
    with pytest.raises(TaskError, match="`detail` must be one of"):
        florence_caption("x.jpg", detail="epic")
    with pytest.raises(TaskError, match="`audio_path` a.wav: no such file"):
        whisper_transcribe("a.wav")


def test_a_missing_library_is_a_clear_permanent_error(work):
    from shared.tasks.errors import MissingDependency, require

    assert require("t", "json", "json").dumps([1]) == "[1]"
    with pytest.raises(MissingDependency, match="demo.task needs the Python package 'no-such-pkg'") as e:
        require("demo.task", "no-such-pkg", "no_such_module_for_dwa", "see the docs")
    assert e.value.retryable is False and "see the docs" in e.value.message
    # A real task past its input checks, on a backend without its library.
    if importlib.util.find_spec("ultralytics") is None:
        (work / "x.png").write_bytes(b"not read before the import")
        with pytest.raises(MissingDependency, match="yolo.detect needs the Python package 'ultralytics'"):
            yolo_detect("x.png")
