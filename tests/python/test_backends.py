"""The Modal app file offline: it imports without a token, and its ASGI app
(the same as the local and Ray backends') speaks the protocol."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient


def test_modal_app_serves_the_same_contract(tmp_path, monkeypatch):
    monkeypatch.setenv("DWA_WORK_DIR", str(tmp_path))
    monkeypatch.setenv("DWA_BACKEND_TOKEN", "t0k")
    import backends.modal.app as modal_app

    asgi = modal_app.web.local()
    with TestClient(asgi, headers={"authorization": "Bearer t0k"}) as c:
        tasks = {t["name"]: t for t in c.get("/tasks").json()["tasks"]}
        assert tasks["yolo.detect"]["gpu"] == "T4"
        r = c.post("/tasks/semantic.search", json={"input": {"query_vector": [1, 0], "vectors": [[0, 1], [1, 0.1]], "texts": ["a", "b"], "top_k": 1}})
        assert r.status_code == 200, r.text
        assert r.json()["result"]["hits"][0]["text"] == "b"
        r = c.post("/tasks/semantic.search", json={"input": {"query_vector": [1, 0, 0], "vectors": [[0, 1]]}})
        assert r.status_code == 422 and "dimensions" in r.json()["error"]["message"]


def test_modal_local_entrypoint_runs_a_cpu_task(capsys):
    import backends.modal.app as modal_app

    modal_app.main.info.raw_f(
        task_type="semantic.search",
        payload=json.dumps({"query_vector": [0, 1], "vectors": [[0, 1], [1, 0]], "top_k": 2}),
    )
    out = json.loads(capsys.readouterr().out)
    assert [h["index"] for h in out["hits"]] == [0, 1]


def test_the_modal_app_refuses_calls_without_a_token_unless_made_public(monkeypatch):
    import backends.modal.app as modal_app

    monkeypatch.delenv("DWA_BACKEND_TOKEN", raising=False)
    monkeypatch.delenv("DWA_BACKEND_PUBLIC", raising=False)
    with TestClient(modal_app.web.local()) as c:
        r = c.get("/tasks")
        assert r.status_code == 401 and "DWA_BACKEND_TOKEN" in r.json()["error"]["message"]
        assert c.get("/health").status_code == 200
    monkeypatch.setenv("DWA_BACKEND_PUBLIC", "1")
    with TestClient(modal_app.web.local()) as c:
        assert c.get("/tasks").status_code == 200
    monkeypatch.setenv("DWA_BACKEND_TOKEN", "t0k")
    with TestClient(modal_app.web.local()) as c:
        assert c.get("/tasks").status_code == 401
        assert c.get("/tasks", headers={"authorization": "Bearer t0k"}).status_code == 200


def test_the_job_table_is_bounded(monkeypatch):
    import asyncio

    import backends.app as backend_app

    monkeypatch.setattr(backend_app, "MAX_JOBS", 2)

    async def fill() -> list[str]:
        jobs = backend_app.Jobs()
        gate = asyncio.Event()

        async def hold():
            await gate.wait()
            return 1, None

        ids = [jobs.start(hold()), jobs.start(hold())]
        refused = None
        try:
            jobs.start(hold())
        except backend_app.JobsFull as e:
            refused = str(e)
        gate.set()
        await asyncio.sleep(0)
        return ids, refused

    ids, refused = asyncio.run(fill())
    assert len(ids) == 2
    assert refused and "DWA_MAX_JOBS=2" in refused


def test_a_job_past_its_timeout_fails_retryably_and_leaves_the_table_in_time():
    import asyncio

    import backends.app as backend_app
    from shared.tasks import TaskError

    async def scenario():
        jobs = backend_app.Jobs()

        async def forever():
            await asyncio.Event().wait()
            return 1, None

        async def own_timeout():
            raise TimeoutError("the site did not answer")

        stuck = jobs.start(forever(), timeout=0.05)
        quick = jobs.start(own_timeout(), timeout=60)
        # Bounded: without the job's own deadline this would never end.
        await asyncio.wait_for(jobs.get(stuck)["task"], 10)
        await asyncio.wait_for(jobs.get(quick)["task"], 10)
        return jobs.get(stuck), jobs.get(quick)

    stuck, quick = asyncio.run(scenario())
    assert stuck["done"] and stuck["ended"] is not None, "an ended job is swept after JOB_TTL_S"
    e = stuck["exception"]
    assert isinstance(e, TaskError) and e.retryable and "ran past its timeout of 0.05 s" in e.message
    # A task's own TimeoutError is its own error, not the job's deadline.
    assert isinstance(quick["exception"], TimeoutError) and str(quick["exception"]) == "the site did not answer"


class FakeModal:
    """Modal's function calls as Modal keeps them, server-side: every app
    instance (container) sees the same calls. Stands in for `Function.spawn`
    and `FunctionCall.from_id(...).get(timeout=0)`."""

    def __init__(self):
        self.calls: dict[str, dict] = {}
        #: Set to an exception: the next spawn raises it (Modal's queue full).
        self.refuse: Exception | None = None

    def function(self, gpu: str | None):
        from types import SimpleNamespace

        async def spawn(name, payload, task_id, step_id, traceparent):
            if self.refuse is not None:
                raise self.refuse
            call_id = f"fc-{len(self.calls) + 1}"
            self.calls[call_id] = {"gpu": gpu, "name": name, "payload": payload, "taskId": task_id,
                                   "traceparent": traceparent, "state": "running"}
            return SimpleNamespace(object_id=call_id)

        return SimpleNamespace(spawn=SimpleNamespace(aio=spawn))

    def from_id(self, call_id: str):
        from types import SimpleNamespace

        import modal.exception

        async def get(timeout=None):
            call = self.calls.get(call_id)
            if call is None:
                raise modal.exception.NotFoundError(f"no function call {call_id}")
            if call["state"] == "running":
                raise modal.exception.TimeoutError("still running")
            if call["state"] == "failed":
                raise call["error"]
            return call["result"]

        return SimpleNamespace(get=SimpleNamespace(aio=get))


def modal_jobs(fake: FakeModal):
    import backends.modal.app as modal_app

    return modal_app.ModalJobs({None: fake.function(None), "T4": fake.function("T4"),
                                "A10G": fake.function("A10G")}, fake)


def test_modal_gpu_tasks_are_spawned_and_polled_from_any_container(monkeypatch):
    import modal.exception

    from backends.app import create_app
    from shared.tasks import REGISTRY, TaskError, task

    @task("t.gpu", category="see", gpu="A10G", timeout=10)
    def gpu_task(x: int) -> dict:
        """Runs on a GPU."""
        return {"x": x}

    try:
        fake = FakeModal()
        tasks = {"t.gpu": REGISTRY["t.gpu"]}
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        with TestClient(create_app(tasks, remote=modal_jobs(fake))) as one, \
                TestClient(create_app(tasks, remote=modal_jobs(fake))) as other:
            r = one.post("/tasks/t.gpu", json={"input": {"x": 3}, "taskId": "t1", "stepId": "s"},
                         headers={"traceparent": tp})
            assert r.status_code == 202, r.text
            call_id = r.json()["jobId"]
            assert fake.calls[call_id] == {"gpu": "A10G", "name": "t.gpu", "payload": {"x": 3}, "taskId": "t1",
                                         "traceparent": tp, "state": "running"}
            # Input is checked before anything is spawned.
            assert one.post("/tasks/t.gpu", json={"input": {"x": "no"}}).status_code == 422
            assert len(fake.calls) == 1
            # Polled on another container while it runs, then when done.
            assert other.get(f"/tasks/t.gpu/jobs/{call_id}").status_code == 202
            fake.calls[call_id].update(state="done", result={"x": 3})
            p = other.get(f"/tasks/t.gpu/jobs/{call_id}")
            assert p.status_code == 200 and p.json() == {"result": {"x": 3}}
            # The task's own error keeps its retry hint.
            fake.calls[call_id].update(state="failed", error=TaskError("no GPU memory", retryable=False))
            p = one.get(f"/tasks/t.gpu/jobs/{call_id}")
            assert p.status_code == 422 and p.json()["error"]["message"] == "no GPU memory"
            # An expired or unknown call: retryable, the host runs the step again.
            p = one.get("/tasks/t.gpu/jobs/fc-999")
            assert p.status_code == 503 and p.json()["error"]["retryable"] is True
        assert issubclass(modal.exception.OutputExpiredError, modal.exception.TimeoutError), \
            "poll() must test expiry before pending"
    finally:
        REGISTRY.pop("t.gpu", None)


def test_modal_long_cpu_tasks_are_spawned_on_the_cpu_function_and_polled_anywhere(monkeypatch):
    import backends.modal.app as modal_app
    from backends.app import create_app
    from shared.tasks import discover

    monkeypatch.setenv("DWA_SYNC_LIMIT_S", "120")
    fake = FakeModal()
    tasks = discover()
    assert tasks["download.file"].timeout > 120, "the test needs a CPU task longer than the sync limit"
    with TestClient(create_app(tasks, remote=modal_jobs(fake))) as one, \
            TestClient(create_app(tasks, remote=modal_jobs(fake))) as other:
        r = one.post("/tasks/download.file", json={"input": {"url": "https://example.com/a"}, "taskId": "t"})
        assert r.status_code == 202, r.text
        call_id = r.json()["jobId"]
        assert fake.calls[call_id]["gpu"] is None and fake.calls[call_id]["name"] == "download.file"
        assert other.get(f"/tasks/download.file/jobs/{call_id}").status_code == 202
        fake.calls[call_id].update(state="done", result={"path": "/w/a"})
        assert other.get(f"/tasks/download.file/jobs/{call_id}").json() == {"result": {"path": "/w/a"}}
        # `?async=1` on a short CPU task is spawned too; without it, it runs in the web container.
        body = {"input": {"query_vector": [1, 0], "vectors": [[0, 1]], "texts": ["a"], "top_k": 1}}
        assert one.post("/tasks/semantic.search?async=1", json=body).status_code == 202
        assert len(fake.calls) == 2
        assert one.post("/tasks/semantic.search", json=body).status_code == 200
        assert len(fake.calls) == 2
    # The real app is wired the same way: a CPU function under None.
    assert modal_app.FUNCTIONS[None] is modal_app.run_cpu


def test_the_modal_app_answers_429_when_modal_refuses_to_queue(monkeypatch):
    import modal.exception

    from backends.app import create_app
    from shared.tasks import discover

    fake = FakeModal()
    fake.refuse = modal.exception.ResourceExhaustedError("too many pending inputs")
    with TestClient(create_app(discover(), remote=modal_jobs(fake))) as c:
        r = c.post("/tasks/download.file", json={"input": {"url": "https://example.com/a"}})
        assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
        assert r.json()["error"]["retryable"] is True and "too many pending inputs" in r.json()["error"]["message"]
