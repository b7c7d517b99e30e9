"""The Modal backend: the same ASGI app as the local and Ray backends, as a
Modal web endpoint, in an image with the tasks' dependencies.

    modal serve backends/modal/app.py        # a dev URL; set MODAL_URL to it
    modal deploy backends/modal/app.py
    modal run backends/modal/app.py --task-type rss.fetch --payload '{"url": "https://..."}'

GPU tasks run in a GPU function of their own (`gpu` from the decorator);
secrets `openai-secret` and `elevenlabs-secret` provide the API keys. Modal
cuts synchronous web requests after ~150 s, so tasks longer than
DWA_SYNC_LIMIT_S (default 120 s) answer 202 and are polled.

Importing this file needs only the `modal` package (no token, no network):
`web.local()` returns the FastAPI app, which the tests serve locally.
"""

from __future__ import annotations

import json
from pathlib import Path

import modal

ROOT = Path(__file__).resolve().parents[2]

image = (
    modal.Image.debian_slim(python_version="3.11")
    .apt_install("ffmpeg", "espeak-ng")
    .pip_install_from_requirements(str(ROOT / "backends" / "requirements-tasks.txt"))
    .add_local_python_source("shared", "backends")
)

app = modal.App("dwa-tasks", image=image)
secrets = [modal.Secret.from_name("openai-secret"), modal.Secret.from_name("elevenlabs-secret")]
# DWA_BACKEND_TOKEN (the host's MODAL_TOKEN): the endpoint is on the internet,
# so without it every call is refused, unless the secret sets
# DWA_BACKEND_PUBLIC=1 instead. `modal secret create dwa-backend DWA_BACKEND_TOKEN=...`
web_secrets = [*secrets, modal.Secret.from_name("dwa-backend")]


@app.function(secrets=web_secrets, timeout=3600, scaledown_window=300)
@modal.asgi_app(label="dwa-tasks")
def web():
    """The backend protocol (GET /tasks, POST /tasks/{name}, polling), closed
    without a token."""
    from backends.app import create_app

    return create_app(require_token=True)


@app.function(gpu="T4", secrets=secrets, timeout=3600)
def run_gpu(name: str, payload: dict, task_id: str = "modal") -> object:
    """Runs one GPU task (the GPU kind of the decorator) with its payload."""
    from shared.tasks import discover
    from shared.tasks.schema import call_kwargs
    from shared.tasks.context import Job, reset_job, set_job

    meta = discover()[name]
    kwargs = call_kwargs(meta.input_model.model_validate(payload))
    token = set_job(Job(task_id=task_id))
    try:
        return meta.fn(**kwargs)
    finally:
        reset_job(token)


@app.local_entrypoint()
def main(task_type: str, payload: str = "{}") -> None:
    """`modal run app.py --task-type NAME --payload JSON`: runs one task and prints its result."""
    from shared.tasks import discover
    from shared.tasks.schema import call_kwargs

    meta = discover().get(task_type)
    if meta is None:
        raise SystemExit(f"unknown task {task_type!r}")
    data = json.loads(payload)
    if meta.gpu:
        print(json.dumps(run_gpu.remote(task_type, data), indent=2))
    else:
        kwargs = call_kwargs(meta.input_model.model_validate(data))
        print(json.dumps(meta.fn(**kwargs), indent=2))
