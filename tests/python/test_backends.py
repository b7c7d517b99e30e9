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
