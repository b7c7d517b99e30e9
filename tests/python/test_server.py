"""The backend protocol app (backends/app.py) over HTTP, with test tasks."""

from __future__ import annotations

import json
import time
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from backends.app import create_app
from shared.tasks import REGISTRY, TaskError, task
from shared.tasks.context import job, workdir


@pytest.fixture(scope="module")
def tasks():
    @task("t.add", category="think", timeout=10)
    def add(a: int, b: int = 1) -> dict:
        """Adds."""
        return {"sum": a + b, "taskId": job().task_id, "folder": workdir().name,
                "traceparent": job().traceparent}

    @task("t.fail", category="think", timeout=10)
    def fail(retryable: bool) -> dict:
        """Fails."""
        raise TaskError("nope", retryable=retryable)

    @task("t.crash", category="think", timeout=10)
    def crash() -> dict:
        """Crashes."""
        raise ZeroDivisionError("division by zero")

    @task("t.words", category="think", streaming=True)
    def words(text: str) -> Iterator[str]:
        """Streams words."""
        for w in text.split():
            yield w + " "
        if "boom" in text:
            raise TaskError("exploded mid-stream", retryable=False)

    @task("t.slow", category="think", timeout=600)
    def slow(ms: int) -> dict:
        """Takes long."""
        time.sleep(ms / 1000)
        return {"slept": ms}

    names = ["t.add", "t.fail", "t.crash", "t.words", "t.slow"]
    yield {n: REGISTRY[n] for n in names}
    for n in names:
        REGISTRY.pop(n, None)


@pytest.fixture
def client(tasks, tmp_path, monkeypatch):
    monkeypatch.setenv("DWA_WORK_DIR", str(tmp_path))
    monkeypatch.delenv("DWA_BACKEND_TOKEN", raising=False)
    # As a context manager the app's event loop outlives each request, as
    # under uvicorn, so submitted jobs keep running between polls.
    with TestClient(create_app(tasks)) as c:
        yield c


def test_catalog_and_run(client):
    cat = client.get("/tasks").json()["tasks"]
    assert [t["name"] for t in cat] == ["t.add", "t.fail", "t.crash", "t.words", "t.slow"]
    assert cat[0]["inputSchema"]["required"] == ["a"]
    r = client.post("/tasks/t.add", json={"input": {"a": 2}, "taskId": "abc", "stepId": "s1"})
    assert r.status_code == 200
    assert r.json() == {"result": {"sum": 3, "taskId": "abc", "folder": "abc", "traceparent": None}}


def test_errors_are_structured(client):
    r = client.post("/tasks/t.nope", json={"input": {}})
    assert r.status_code == 404 and r.json()["error"]["retryable"] is False
    r = client.post("/tasks/t.add", json={"input": {"a": "x", "c": 1}})
    assert r.status_code == 422
    msg = r.json()["error"]["message"]
    assert "input.a" in msg and "input.c" in msg, msg
    r = client.post("/tasks/t.add", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = client.post("/tasks/t.fail", json={"input": {"retryable": False}})
    assert (r.status_code, r.json()) == (422, {"error": {"message": "nope", "retryable": False}})
    r = client.post("/tasks/t.fail", json={"input": {"retryable": True}})
    assert (r.status_code, r.json()["error"]["retryable"]) == (503, True)
    r = client.post("/tasks/t.crash", json={"input": {}})
    assert r.status_code == 500 and "ZeroDivisionError" in r.json()["error"]["message"]


def _sse(text: str) -> list:
    return [json.loads(line[len("data: "):]) for line in text.split("\n") if line.startswith("data: ")]


def test_streaming_as_sse_and_ndjson(client):
    r = client.post("/tasks/t.words", json={"input": {"text": "a b c"}})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert _sse(r.text) == ["a ", "b ", "c ", {"result": "a b c "}]
    r = client.post("/tasks/t.words", json={"input": {"text": "x y"}}, headers={"accept": "application/x-ndjson"})
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(l) for l in r.text.splitlines()] == ["x ", "y ", {"result": "x y "}]
    r = client.post("/tasks/t.words", json={"input": {"text": "a boom"}})
    assert _sse(r.text)[-1] == {"error": {"message": "exploded mid-stream", "retryable": False}}


def test_long_tasks_are_submitted_then_polled(client):
    r = client.post("/tasks/t.slow", json={"input": {"ms": 50}})
    assert r.status_code == 202
    job_id = r.json()["jobId"]
    deadline = time.monotonic() + 10
    while True:
        p = client.get(f"/tasks/t.slow/jobs/{job_id}")
        if p.status_code != 202:
            break
        assert time.monotonic() < deadline, "the job never finished"
        time.sleep(0.02)
    assert p.status_code == 200 and p.json() == {"result": {"slept": 50}}
    # Forced async, and an error delivered through the poll.
    r = client.post("/tasks/t.fail?async=1", json={"input": {"retryable": False}})
    job_id = r.json()["jobId"]
    deadline = time.monotonic() + 10
    while (p := client.get(f"/tasks/t.fail/jobs/{job_id}")).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert p.status_code == 422 and p.json()["error"]["message"] == "nope"
    # A job this process does not know (it restarted, or another replica
    # started it): retryable, so the host runs the step again.
    lost = client.get("/tasks/t.slow/jobs/unknown")
    assert lost.status_code == 503 and lost.json()["error"]["retryable"] is True


def test_bearer_token(tasks, monkeypatch):
    monkeypatch.setenv("DWA_BACKEND_TOKEN", "s3cret")
    c = TestClient(create_app(tasks))
    assert c.get("/health").status_code == 200
    assert c.get("/tasks").status_code == 401
    assert c.get("/tasks", headers={"authorization": "Bearer s3cret"}).status_code == 200


def test_the_real_catalog_loads_without_heavy_libraries():
    c = TestClient(create_app())
    names = {t["name"] for t in c.get("/tasks").json()["tasks"]}
    assert {"yolo.detect", "whisper.transcribe", "download.file", "openai.chat"} <= names


def test_where_a_forwarded_task_ran_is_answered_in_a_header(tmp_path, monkeypatch):
    # Stand-ins for Ray's forwarding: an async task that says where it ran
    # (as backends/ray/serve.py does for its GPU families), one whose error says it.
    from shared.tasks.context import SERVED_BY

    @task("t.away", category="think", timeout=10)
    async def away() -> dict:
        """Runs elsewhere."""
        SERVED_BY.set("gpu-yolo")
        return {"ok": True}

    @task("t.away_fail", category="think", timeout=600)
    async def away_fail() -> dict:
        """Fails elsewhere (long: answered by submit-then-poll)."""
        e = TaskError("no such file", retryable=False)
        e.served_by = "gpu-yolo"
        raise e

    monkeypatch.setenv("DWA_WORK_DIR", str(tmp_path))
    monkeypatch.delenv("DWA_BACKEND_TOKEN", raising=False)
    tasks = {n: REGISTRY.pop(n) for n in ["t.away", "t.away_fail"]}
    with TestClient(create_app(tasks)) as c:
        r = c.post("/tasks/t.away", json={"input": {}})
        assert r.status_code == 200 and r.json() == {"result": {"ok": True}}
        assert r.headers["x-dwa-served-by"] == "gpu-yolo"
        accepted = c.post("/tasks/t.away_fail", json={"input": {}})
        assert accepted.status_code == 202, accepted.text
        url = f"/tasks/t.away_fail/jobs/{accepted.json()['jobId']}"
        deadline = time.monotonic() + 10
        while (r := c.get(url)).status_code == 202:
            assert time.monotonic() < deadline, "the job did not end within 10 s"
            time.sleep(0.01)
        assert r.status_code == 422 and r.json()["error"]["message"] == "no such file"
        assert r.headers["x-dwa-served-by"] == "gpu-yolo"


def test_a_working_folder_made_by_dwa_carries_the_marker_the_host_sweeps_by(tmp_path, monkeypatch):
    from shared.tasks.context import WORKDIR_MARKER, Job, reset_job, set_job

    monkeypatch.setenv("DWA_WORK_DIR", str(tmp_path / "work"))
    token = set_job(Job(task_id="t-marked", step_id="s"))
    try:
        d = workdir()
    finally:
        reset_job(token)
    assert d == tmp_path / "work" / "t-marked"
    # The same name as the host's (dwa_plugins::WORKDIR_MARKER).
    assert WORKDIR_MARKER == ".dwa-workdir"
    assert (d / WORKDIR_MARKER).is_file()


def test_the_hosts_trace_context_reaches_the_task_and_a_malformed_one_does_not(client):
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = client.post("/tasks/t.add", json={"input": {"a": 1}, "taskId": "abc"}, headers={"traceparent": tp})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["traceparent"] == tp
    r = client.post("/tasks/t.add", json={"input": {"a": 1}, "taskId": "abc"},
                    headers={"traceparent": "00-zz-not-a-context"})
    assert r.json()["result"]["traceparent"] is None


def test_a_full_job_table_answers_429_with_retry_after(client, monkeypatch):
    import backends.app as backend_app

    monkeypatch.setattr(backend_app, "MAX_JOBS", 0)
    r = client.post("/tasks/t.slow?async=1", json={"input": {"ms": 1}, "taskId": "abc"})
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["retryable"] is True
