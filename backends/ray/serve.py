"""The Ray Serve backend: the same HTTP contract, served by a FastAPI ingress
deployment; GPU tasks run in a deployment of their own that asks Ray for a GPU.

    ray start --head
    serve run backends.ray.serve:deployment      # http://127.0.0.1:8000
    # host: RAY_URL=http://127.0.0.1:8000

Per-task resources come from the decorators: tasks with `gpu=` go to the
`GpuTasks` deployment (one GPU per replica when the cluster has GPUs, none on
a CPU-only cluster; DWA_RAY_NUM_GPUS overrides); the rest run in the ingress
replicas. `python -m backends.ray.run` starts Ray and Serve and stops both
cleanly on SIGTERM.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from ray import serve

from backends.app import create_app
from shared.tasks import TaskMeta, discover
from shared.tasks.context import Job, reset_job, set_job

TASKS = discover()


def gpus_per_replica() -> float:
    """DWA_RAY_NUM_GPUS, else 1 when the cluster has a GPU and 0 when it has none
    (a GPU deployment on a CPU-only cluster would wait for a GPU forever)."""
    if "DWA_RAY_NUM_GPUS" in os.environ:
        return float(os.environ["DWA_RAY_NUM_GPUS"])
    import ray

    if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1:
        return 1.0
    logging.getLogger("dwa").warning("no GPU in the Ray cluster: GPU tasks run on CPU (set DWA_RAY_NUM_GPUS to override)")
    return 0.0


@serve.deployment
class GpuTasks:
    """Runs the GPU tasks; one replica holds its models warm between calls."""

    def run(self, name: str, kwargs: dict[str, Any], task_id: str, step_id: str,
            traceparent: str | None = None) -> dict[str, Any]:
        """The task's result, with this deployment's name (the ingress answers
        it in `X-DWA-Served-By`, on errors too)."""
        where = serve.get_replica_context().deployment
        token = set_job(Job(task_id=task_id, step_id=step_id, traceparent=traceparent))
        try:
            return {"result": TASKS[name].fn(**kwargs), "servedBy": where}
        except Exception as e:
            e.served_by = where
            raise
        finally:
            reset_job(token)


#: The GpuTasks handle of this replica (set when the ingress starts).
_gpu: dict[str, Any] = {"handle": None}


def _forwarded(meta: TaskMeta):
    """A stand-in task function that runs `meta` on the GPU deployment."""
    from shared.tasks.context import job

    async def run(**kwargs):
        # Through the module, not this closure's globals: Serve ships the app
        # to the replica pickled by value, globals and all.
        from backends.ray import serve as this_module

        handle = this_module._gpu["handle"]
        if handle is None:
            raise RuntimeError("the GpuTasks deployment is not bound to this ingress")
        from ray.exceptions import RayTaskError

        from shared.tasks.context import SERVED_BY

        j = job()
        try:
            out = await handle.run.remote(meta.name, kwargs, j.task_id, j.step_id, j.traceparent)
            SERVED_BY.set(out["servedBy"])
            return out["result"]
        except RayTaskError as e:
            # The task's own error (message and retry hint), not Ray's wrapper.
            if isinstance(e.cause, Exception):
                raise e.cause from None
            raise

    return run


def build():
    """The ingress app: GPU tasks (not streaming ones) forwarded to GpuTasks."""
    tasks = dict(TASKS)
    for name, meta in TASKS.items():
        if meta.gpu and not meta.streaming:
            tasks[name] = dataclasses.replace(meta, fn=_forwarded(meta))
    return create_app(tasks)


app = build()


@serve.deployment
@serve.ingress(app)
class Ingress:
    """The backend protocol; GPU tasks go to the GpuTasks deployment."""

    def __init__(self, gpu) -> None:
        from backends.ray import serve as this_module  # the real module (see _forwarded)

        this_module._gpu["handle"] = gpu


deployment = Ingress.bind(GpuTasks.options(ray_actor_options={"num_gpus": gpus_per_replica()}).bind())
