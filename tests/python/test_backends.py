"""The Modal app file offline: it imports without a token, and its ASGI app
(the same as the local and Ray backends') speaks the protocol."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient


def test_modal_app_serves_the_same_contract(tmp_path, monkeypatch):
    monkeypatch.setenv("DWA_WORK_DIR", str(tmp_path))
    import backends.modal.app as modal_app

    asgi = modal_app.web.local()
    with TestClient(asgi) as c:
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
