"""Submit-then-poll jobs on Ray, seen alike by every ingress replica.

Jobs live in one named, detached actor per Serve application (`JobTable`),
which itself calls the deployment that runs the task and awaits its answer.
The actor owns those calls, so a job outlives the ingress replica that took
it, and a poll answered by any replica reads the same table. A job whose
worker replica dies fails with a retryable error, so the host runs the step
again; if the table itself restarts, its jobs are unknown, which the
protocol also makes retryable (docs/backend-protocol.md, "Long jobs").
"""

from __future__ import annotations

from typing import Any

import ray

from backends.app import Jobs, JobsFull
from shared.tasks import TaskError, TaskMeta
from shared.tasks.context import Job
from shared.tasks.schema import call_kwargs

#: Ray namespace of the job tables (one per Serve application).
NAMESPACE = "dwa"


def table_name(app_name: str) -> str:
    return f"dwa-jobs-{app_name}"


@ray.remote(num_cpus=0, max_restarts=-1)
class JobTable:
    """The jobs of one Serve application: bounded by DWA_MAX_JOBS and kept an
    hour after they end (backends.app.Jobs), here in an async actor."""

    def __init__(self, app_name: str) -> None:
        self._app = app_name
        self._jobs = Jobs()
        self._handles: dict[str, Any] = {}

    async def start(self, deployment: str, name: str, kwargs: dict[str, Any], job: Job,
                    timeout: float | None = None) -> dict[str, str]:
        """`{"jobId"}`, or `{"full": why}` when the table is full; a job
        still running `timeout` seconds on is stopped and fails retryably."""
        handle = self._handles.get(deployment)
        if handle is None:
            from ray import serve

            handle = self._handles[deployment] = serve.get_deployment_handle(deployment, app_name=self._app)

        async def run() -> tuple[Any, str | None]:
            out = await handle.run.remote(name, kwargs, job)
            return out["result"], out["servedBy"]

        try:
            return {"jobId": self._jobs.start(run(), timeout)}
        except JobsFull as e:
            return {"full": str(e)}

    async def poll(self, job_id: str) -> dict[str, Any]:
        """`{"state": "running"|"unknown"}`, `{"state": "done", "result",
        "servedBy"}` or `{"state": "failed", "message", "retryable", "servedBy"}`
        (plain data: an exception of the task's own may not unpickle here)."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return {"state": "unknown"}
        if not entry["done"]:
            return {"state": "running"}
        if "exception" in entry:
            return {"state": "failed", **failure(entry["exception"])}
        return {"state": "done", "result": entry["result"], "servedBy": entry.get("served_by")}


def failure(e: BaseException) -> dict[str, Any]:
    """A job's error as the host must see it: the task's own (Ray's wrapper
    removed), or a retryable one when Ray lost the replica running it."""
    from ray.exceptions import RayActorError, RayTaskError

    where = getattr(e, "served_by", None)
    if isinstance(e, RayTaskError) and isinstance(e.cause, Exception):
        where = getattr(e.cause, "served_by", where)
        e = e.cause
    if isinstance(e, TaskError):
        return {"message": e.message, "retryable": e.retryable, "servedBy": where}
    if isinstance(e, RayActorError):
        return {"message": f"the replica running the job died ({type(e).__name__}); run the step again",
                "retryable": True, "servedBy": where}
    return {"message": f"{type(e).__name__}: {e}", "retryable": True, "servedBy": where}


class RayJobs:
    """The ingress's side of the table (backends.app.RemoteJobs): every
    submit-then-poll job goes to `deployment_of(meta)` through it."""

    def __init__(self, deployment_of) -> None:
        self._deployment_of = deployment_of
        self._handle = None

    def _table(self):
        # Found (or made: the first replica to ask makes it) on first use,
        # inside a replica, where the application's name is known.
        if self._handle is None:
            from ray import serve

            app_name = serve.get_replica_context().app_name
            self._handle = JobTable.options(
                name=table_name(app_name), namespace=NAMESPACE, lifetime="detached", get_if_exists=True
            ).remote(app_name)
        return self._handle

    def always(self, meta: TaskMeta) -> bool:
        return False

    async def spawn(self, meta: TaskMeta, payload: dict[str, Any], job: Job) -> str:
        kwargs = call_kwargs(meta.input_model.model_validate(payload))
        out = await self._table().start.remote(self._deployment_of(meta), meta.name, kwargs, job, meta.timeout)
        if "full" in out:
            raise JobsFull(out["full"])
        return out["jobId"]

    async def poll(self, job_id: str) -> tuple[str, Any, str | None]:
        from ray.exceptions import RayActorError

        try:
            out = await self._table().poll.remote(job_id)
        except RayActorError:
            # The table restarted (its jobs are gone) or is restarting.
            return "unknown", None, None
        if out["state"] == "failed":
            return "failed", TaskError(out["message"], retryable=out["retryable"]), out["servedBy"]
        return out["state"], out.get("result"), out.get("servedBy")
