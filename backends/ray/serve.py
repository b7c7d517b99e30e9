"""The Ray Serve backend: the same HTTP contract, served by a FastAPI ingress
deployment; GPU tasks run in a deployment of their own that asks Ray for a GPU.

    ray start --head
    serve run backends.ray.serve:deployment      # http://127.0.0.1:8000
    # host: RAY_URL=http://127.0.0.1:8000

Per-task resources come from the decorators: tasks with `gpu=` go to the
`GpuTasks` deployment (`num_gpus` from DWA_RAY_NUM_GPUS, default 1; set 0 to
try GPU tasks on a CPU-only cluster); the rest run in the ingress replicas.
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve

from backends.app import create_app
from shared.tasks import TaskMeta, discover
from shared.tasks.context import Job, reset_job, set_job

TASKS = discover()


@serve.deployment(ray_actor_options={"num_gpus": float(os.environ.get("DWA_RAY_NUM_GPUS", "1"))})
class GpuTasks:
    """Runs the GPU tasks; one replica holds its models warm between calls."""

    def run(self, name: str, kwargs: dict[str, Any], task_id: str, step_id: str) -> Any:
        token = set_job(Job(task_id=task_id, step_id=step_id))
        try:
            return TASKS[name].fn(**kwargs)
        finally:
            reset_job(token)


#: The GpuTasks handle of this replica (set when the ingress starts).
_gpu: dict[str, Any] = {"handle": None}


def _forwarded(meta: TaskMeta):
    """A stand-in task function that runs `meta` on the GPU deployment."""
    from shared.tasks.context import job

    async def run(**kwargs):
        handle = _gpu["handle"]
        if handle is None:
            raise RuntimeError("the GpuTasks deployment is not bound to this ingress")
        j = job()
        return await handle.run.remote(meta.name, kwargs, j.task_id, j.step_id)

    return run


def build():
    """The ingress app: GPU tasks (not streaming ones) forwarded to GpuTasks."""
    tasks = dict(TASKS)
    for name, meta in TASKS.items():
        if meta.gpu and not meta.streaming:
            forwarded = TaskMeta(**{**meta.__dict__, "fn": _forwarded(meta)})
            forwarded.input_model = meta.input_model  # type: ignore[attr-defined]
            tasks[name] = forwarded
    return create_app(tasks)


app = build()


@serve.deployment
@serve.ingress(app)
class Ingress:
    """The backend protocol; GPU tasks go to the GpuTasks deployment."""

    def __init__(self, gpu) -> None:
        _gpu["handle"] = gpu


deployment = Ingress.bind(GpuTasks.bind())
