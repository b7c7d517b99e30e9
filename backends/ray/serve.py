"""The Ray Serve backend: the same HTTP contract, served by a FastAPI ingress
deployment, with a deployment per GPU task family and one for long CPU jobs.

    python -m backends.ray.run                       # starts Ray, or --address auto
    serve run backends.ray.serve:deployment          # on a cluster already up
    # host: RAY_URL=http://127.0.0.1:8000

- `Ingress` serves the protocol and runs short CPU tasks.
- `gpu-FAMILY` (one per family: `yolo`, `whisper`, `florence`, ...) runs
  that family's GPU tasks; its replicas keep the family's models loaded.
  Each asks Ray for a GPU (none on a CPU-only cluster; DWA_RAY_NUM_GPUS or
  the file's `num_gpus` override) and for the largest `ram=` of its tasks.
- `LongTasks` runs CPU jobs that answer 202 and are polled.
- Submit-then-poll jobs are held by a named detached actor (backends/ray/jobs.py),
  so any ingress replica answers any poll.

Replicas and resources per deployment come from backends/ray/config.py's
file. `GET /deployments` shows what Serve runs (replicas by state) beside
the scale asked for; every answer names its ingress replica in `X-DWA-Replica`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Any

from ray import serve

from backends.app import create_app, run_as
from backends.ray import config
from backends.ray.jobs import RayJobs
from shared.tasks import TaskMeta, discover
from shared.tasks.context import Job

TASKS = discover()
#: Where long CPU jobs run.
LONG = "LongTasks"


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


def forwarded(meta: TaskMeta) -> bool:
    """Whether `meta` runs in its family's GPU deployment (streaming tasks
    stream from the ingress)."""
    return bool(meta.gpu) and not meta.streaming


def family(meta: TaskMeta) -> str:
    """`meta`'s family (a former name's is its current name's)."""
    return config.family_of(meta.replaced_by or meta.name)


def deployment_of(meta: TaskMeta) -> str:
    """The deployment that runs `meta`'s submit-then-poll jobs."""
    return f"gpu-{family(meta)}" if forwarded(meta) else LONG


class Runner:
    """Runs tasks sent by the ingress or the job table, and says where."""

    async def run(self, name: str, kwargs: dict[str, Any], job: Job) -> dict[str, Any]:
        """The task's result, with this deployment's name (the ingress answers
        it in `X-DWA-Served-By`, on errors too)."""
        where = serve.get_replica_context().deployment
        try:
            return {"result": await asyncio.to_thread(run_as, TASKS[name], kwargs, job), "servedBy": where}
        except Exception as e:
            e.served_by = where
            raise


@serve.deployment
class GpuFamily(Runner):
    """The GPU tasks of one family; a replica holds their models warm."""


@serve.deployment
class LongTasks(Runner):
    """CPU jobs answered 202 and polled: off the ingress, scaled on their own."""


#: This replica's handles (set when the ingress starts): GPU families by name.
_gpu: dict[str, Any] = {}


def _forward(meta: TaskMeta):
    """A stand-in task function that runs `meta` on its family's deployment."""
    from shared.tasks.context import job

    async def run(**kwargs):
        # Through the module, not this closure's globals: Serve ships the app
        # to the replica pickled by value, globals and all.
        from backends.ray import serve as this_module
        from backends.ray.jobs import failure
        from shared.tasks import TaskError
        from shared.tasks.context import SERVED_BY

        handle = this_module._gpu.get(family(meta))
        if handle is None:
            raise RuntimeError(f"the gpu-{family(meta)} deployment is not bound to this ingress")
        try:
            out = await handle.run.remote(meta.name, kwargs, job())
        except Exception as e:
            # The task's own error (message and retry hint), not Ray's wrapper.
            f = failure(e)
            err = TaskError(f["message"], retryable=f["retryable"])
            err.served_by = f["servedBy"]
            raise err from None
        SERVED_BY.set(out["servedBy"])
        return out["result"]

    return run


def ingress_app():
    """The FastAPI app of the ingress: GPU tasks forwarded to their family,
    long jobs to the job table, `GET /deployments`, `X-DWA-Replica`."""
    tasks = {name: dataclasses.replace(meta, fn=_forward(meta)) if forwarded(meta) else meta
             for name, meta in TASKS.items()}
    app = create_app(tasks, remote=RayJobs(deployment_of))

    @app.middleware("http")
    async def replica(request, call_next):
        response = await call_next(request)
        response.headers["x-dwa-replica"] = serve.get_replica_context().replica_id.unique_id
        return response

    @app.get("/deployments")
    async def deployments() -> dict:
        from backends.ray import serve as this_module

        ctx = serve.get_replica_context()
        status = (await asyncio.to_thread(serve.status)).applications.get(ctx.app_name)
        running = status.deployments if status else {}
        return {
            "application": ctx.app_name,
            "status": _text(status.status) if status else "UNKNOWN",
            "deployments": {
                name: {
                    "status": _text(running[name].status) if name in running else "MISSING",
                    "replicas": {_text(k): v for k, v in running[name].replica_states.items()}
                    if name in running else {},
                    "scale": scale,
                }
                for name, scale in this_module._scales.items()
            },
        }

    return app


def _text(state: Any) -> str:
    """A Serve state (an enum, or already its text) as text."""
    return str(getattr(state, "value", state))


#: The scale each deployment was asked for (set when the ingress starts).
_scales: dict[str, dict[str, Any]] = {}


@serve.deployment
@serve.ingress(ingress_app())
class Ingress:
    """The backend protocol; GPU tasks go to their family's deployment."""

    def __init__(self, gpu: dict[str, Any], long: Any, scales: dict[str, dict[str, Any]]) -> None:
        from backends.ray import serve as this_module  # the real module (see _forward)

        this_module._gpu.update(gpu)
        this_module._scales.update(scales)
        del long  # bound so that Serve deploys it; the job table calls it by name


def plan(cfg: config.Config) -> dict[str, tuple[config.Scale, dict[str, Any]]]:
    """Every deployment's scale and Ray actor options, by deployment name:
    `Ingress`, `LongTasks` and a `gpu-FAMILY` per GPU task family in TASKS.
    Raises `config.ConfigError` on a configured family the tasks do not have."""
    families: dict[str, list[TaskMeta]] = {}
    for meta in TASKS.values():
        if forwarded(meta) and meta.replaced_by is None:
            families.setdefault(family(meta), []).append(meta)
    unknown = sorted(set(cfg.families) - set(families))
    if unknown:
        raise config.ConfigError(f"[family.{unknown[0]}] names no GPU task family; the families are "
                                 f"{', '.join(sorted(families))}")
    out: dict[str, tuple[config.Scale, dict[str, Any]]] = {}
    gpus = None
    for name, metas in sorted(families.items()):
        scale = cfg.family(name)
        if scale.num_gpus is None and gpus is None:
            gpus = gpus_per_replica()
        actor: dict[str, Any] = {"num_cpus": scale.num_cpus,
                                 "num_gpus": scale.num_gpus if scale.num_gpus is not None else gpus}
        ram = max((m.ram or 0.0) for m in metas)
        if ram:
            actor["memory"] = int(ram * 2**30)
        out[f"gpu-{name}"] = (scale, actor)
    out[LONG] = (cfg.long, {"num_cpus": cfg.long.num_cpus})
    out["Ingress"] = (cfg.ingress, {"num_cpus": cfg.ingress.num_cpus})
    return out


def build(cfg: config.Config | None = None):
    """The application: the ingress bound to LongTasks and to each GPU
    family's deployment, scaled as `cfg` (default: the file) says."""
    planned = plan(cfg or config.load())

    def options(name: str) -> dict[str, Any]:
        scale, actor = planned[name]
        return {"name": name, "autoscaling_config": scale.autoscaling(),
                "max_ongoing_requests": scale.max_ongoing_requests, "ray_actor_options": actor}

    families = {name.removeprefix("gpu-"): GpuFamily.options(**options(name)).bind()
                for name in planned if name.startswith("gpu-")}
    scales = {name: {**scale.autoscaling(), "max_ongoing_requests": scale.max_ongoing_requests, **actor}
              for name, (scale, actor) in planned.items()}
    long = LongTasks.options(**options(LONG)).bind()
    return Ingress.options(**options("Ingress")).bind(families, long, scales)


def __getattr__(name: str):
    # `serve run backends.ray.serve:deployment`: built when asked for, so
    # that replicas importing this module do not build it again.
    if name == "deployment":
        return build()
    raise AttributeError(name)
