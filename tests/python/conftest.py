"""Shared fixtures: the repo on sys.path, a working folder per test, small
local HTTP servers standing in for the web."""

from __future__ import annotations

import http.server
import socketserver
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared.tasks.context import Job, reset_job, set_job  # noqa: E402


@pytest.fixture
def work(tmp_path, monkeypatch):
    """DWA_WORK_DIR in a temp folder and a current job: answers the task's folder."""
    monkeypatch.setenv("DWA_WORK_DIR", str(tmp_path / "work"))
    token = set_job(Job(task_id="t-test", step_id="s"))
    folder = tmp_path / "work" / "t-test"
    folder.mkdir(parents=True)
    yield folder
    reset_job(token)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A static HTTP server over a temp folder: answers (folder, base URL).
    Its address is loopback, so the backend's allow-list names it."""
    monkeypatch.setenv("DWA_HTTP_ALLOW", "127.0.0.1")
    root = tmp_path / "site"
    root.mkdir()

    def handler(*args, **kwargs):
        return _Quiet(*args, directory=str(root), **kwargs)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
