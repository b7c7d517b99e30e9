"""The Modal backend: the same ASGI app as the local and Ray backends, as a
Modal web endpoint, in an image with the tasks' dependencies.

    modal serve backends/modal/app.py        # a dev URL; set MODAL_URL to it
    modal deploy backends/modal/app.py
    modal run backends/modal/app.py --task-type rss.fetch --payload '{"url": "https://..."}'

GPU tasks run in a GPU function per GPU class (`gpu` from the decorator:
`run_gpu_t4`, `run_gpu_a10g`), spawned: the web endpoint answers 202 with
the Modal function call's id, and a poll on any web container reads that
call's result from Modal (`FunctionCall.from_id`), so polls survive more
containers and restarts. CPU tasks run in the web container, except long
ones (timeout over DWA_SYNC_LIMIT_S, default 120 s: Modal cuts synchronous
web requests after ~150 s) and `?async=1` calls, which are spawned on
`run_cpu` and polled the same way. `DWA_MODAL_MAX_CONTAINERS` (default 10)
caps each spawned function's containers, `DWA_MODAL_MIN_CONTAINERS`
(default 0) keeps some warm. Secrets `openai-secret` and
`elevenlabs-secret` provide the API keys.

Importing this file needs only the `modal` package (no token, no network):
`web.local()` returns the FastAPI app, which the tests serve locally.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


class ModalJobs:
    """Jobs as spawned Modal function calls: GPU tasks always, on the
    function of their GPU class (key: the class), long CPU tasks on the CPU
    function (key: None). The job id is the call's id, which any container
    can poll."""

    def __init__(self, functions: dict[str | None, Any], function_call: Any) -> None:
        self._functions = functions
        self._function_call = function_call

    def always(self, meta) -> bool:
        return bool(meta.gpu)

    async def spawn(self, meta, payload: dict[str, Any], job) -> str:
        from modal.exception import ResourceExhaustedError

        from backends.app import JobsFull
        from shared.tasks import TaskError

        fn = self._functions.get(meta.gpu)
        if fn is None:
            raise TaskError(f"{meta.name} asks for GPU {meta.gpu!r}; this app has "
                            f"{sorted(k for k in self._functions if k)}", retryable=False)
        try:
            call = await fn.spawn.aio(meta.name, payload, job.task_id, job.step_id, job.traceparent)
        except ResourceExhaustedError as e:
            # Modal's queue or rate limit: the host waits, without spending a try.
            raise JobsFull(f"Modal refused to queue {meta.name}: {e}") from None
        return call.object_id

    async def poll(self, job_id: str) -> tuple[str, Any, str | None]:
        from modal.exception import NotFoundError, OutputExpiredError
        from modal.exception import TimeoutError as Pending

        try:
            result = await self._function_call.from_id(job_id).get.aio(timeout=0)
        except (OutputExpiredError, NotFoundError):
            return "unknown", None, None
        except Pending:
            return "running", None, None
        except Exception as e:  # the task's own error, re-raised by Modal
            return "failed", e, None
        return "done", result, None


def _run(name: str, payload: dict, task_id: str, step_id: str, traceparent: str | None) -> object:
    """Runs one task with its payload, as the job of `task_id`."""
    from backends.app import run_as
    from shared.tasks import discover
    from shared.tasks.context import Job
    from shared.tasks.schema import call_kwargs

    meta = discover()[name]
    kwargs = call_kwargs(meta.input_model.model_validate(payload))
    return run_as(meta, kwargs, Job(task_id=task_id, step_id=step_id, traceparent=traceparent))


_SCALE = {
    "max_containers": int(os.environ.get("DWA_MODAL_MAX_CONTAINERS", "10")),
    "min_containers": int(os.environ.get("DWA_MODAL_MIN_CONTAINERS", "0")),
}


@app.function(secrets=secrets, timeout=86_400, **_SCALE)
def run_cpu(name: str, payload: dict, task_id: str = "modal", step_id: str = "",
            traceparent: str | None = None) -> object:
    """Runs one long CPU task (polled, not held by a web request)."""
    return _run(name, payload, task_id, step_id, traceparent)


@app.function(gpu="T4", secrets=secrets, timeout=3600, **_SCALE)
def run_gpu_t4(name: str, payload: dict, task_id: str = "modal", step_id: str = "",
               traceparent: str | None = None) -> object:
    """Runs one task whose decorator asks for a T4."""
    return _run(name, payload, task_id, step_id, traceparent)


@app.function(gpu="A10G", secrets=secrets, timeout=3600, **_SCALE)
def run_gpu_a10g(name: str, payload: dict, task_id: str = "modal", step_id: str = "",
                 traceparent: str | None = None) -> object:
    """Runs one task whose decorator asks for an A10G."""
    return _run(name, payload, task_id, step_id, traceparent)


#: The GPU function of each GPU class the decorators name.
GPU_FUNCTIONS = {"T4": run_gpu_t4, "A10G": run_gpu_a10g}
#: Where spawned jobs run: by GPU class, CPU tasks under None.
FUNCTIONS: dict[str | None, Any] = {None: run_cpu, **GPU_FUNCTIONS}


@app.function(secrets=web_secrets, timeout=3600, scaledown_window=300)
@modal.asgi_app(label="dwa-tasks")
def web():
    """The backend protocol (GET /tasks, POST /tasks/{name}, polling), closed
    without a token; GPU tasks and long CPU tasks spawned on their function."""
    from backends.app import create_app

    return create_app(require_token=True, remote=ModalJobs(FUNCTIONS, modal.FunctionCall))


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
        print(json.dumps(GPU_FUNCTIONS[meta.gpu].remote(task_type, data), indent=2))
    else:
        kwargs = call_kwargs(meta.input_model.model_validate(data))
        print(json.dumps(meta.fn(**kwargs), indent=2))
