"""The backend protocol of docs/backend-protocol.md as one ASGI app (FastAPI), served by
every backend: `backends/local` (uvicorn), `backends/ray` (Ray Serve ingress)
and `backends/modal` (a Modal ASGI function).

- `GET  /tasks`                     the catalog, from the `@task` decorators
- `POST /tasks/{name}`              `{"input", "taskId", "stepId"}` → `{"result"}`;
                                    a streaming task answers SSE (or NDJSON when asked);
                                    a long task (timeout > DWA_SYNC_LIMIT_S, or `?async=1`)
                                    answers 202 `{"jobId", "retryAfterMs"}`
- `GET  /tasks/{name}/jobs/{jobId}` 202 while running, then the result or the error
- `GET  /health`

Errors are `{"error": {"message", "retryable"}}` with 404 (unknown task), 422
(bad input or a task's permanent failure), 503 (a retryable failure) or 500.
With `DWA_BACKEND_TOKEN` set, every call but /health needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import time
import uuid
from typing import Any, AsyncIterator, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from shared.tasks import TaskError, TaskMeta, discover
from shared.tasks import context as task_context
from shared.tasks.context import Job, reset_job, set_job
from shared.tasks.schema import call_kwargs

#: How long a job's outcome is kept for polling after it ends.
JOB_TTL_S = 3600.0
#: Submit-then-poll jobs one process keeps at most (running, or ended and
#: not yet polled away): past it a submission is refused, retryably.
MAX_JOBS = int(os.environ.get("DWA_MAX_JOBS", "10000"))


class JobsFull(Exception):
    """The job table holds MAX_JOBS jobs."""

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def _traceparent(value: str | None) -> str | None:
    """The caller's W3C trace context, when well formed (else none: a task
    must not build on a header it cannot parse)."""
    return value if value and _TRACEPARENT.match(value.strip().lower()) else None


def _served_by(where: str | None) -> dict[str, str]:
    return {"x-dwa-served-by": where} if where else {}


def _error(status: int, message: str, retryable: bool, where: str | None = None,
           retry_after_s: int | None = None) -> JSONResponse:
    headers = _served_by(where)
    if retry_after_s is not None:
        headers["retry-after"] = str(retry_after_s)
    return JSONResponse({"error": {"message": message, "retryable": retryable}}, status_code=status,
                        headers=headers)


def _validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(x) for x in err.get("loc", ())) or "input"
        parts.append(f"input.{where}: {err.get('msg')}")
    return "; ".join(parts)


def merge_chunks(chunks: list[Any]) -> Any:
    """A streaming task's final result: text chunks joined, others listed."""
    if chunks and all(isinstance(c, str) for c in chunks):
        return "".join(chunks)
    return chunks


class Jobs:
    """Submit-then-poll jobs of this process (kept `JOB_TTL_S` after they end)."""

    def __init__(self) -> None:
        self._jobs: dict[str, dict[str, Any]] = {}

    def start(self, coro, timeout: float | None = None) -> str:
        """The new job's id. A job still running `timeout` seconds on is
        stopped and fails retryably (the host's own deadline has passed
        by then), so that no job holds its place in the table for good."""
        self._sweep()
        if len(self._jobs) >= MAX_JOBS:
            coro.close()
            raise JobsFull(f"this backend holds {len(self._jobs)} jobs, its limit (DWA_MAX_JOBS={MAX_JOBS}); try again later")
        job_id = uuid.uuid4().hex
        entry: dict[str, Any] = {"done": False, "ended": None}
        self._jobs[job_id] = entry

        async def run() -> None:
            limit = asyncio.timeout(timeout)
            try:
                async with limit:
                    entry["result"], entry["served_by"] = await coro
            except Exception as e:  # recorded for the poller
                if isinstance(e, TimeoutError) and limit.expired():
                    e = TaskError(f"the job ran past its timeout of {timeout:g} s", retryable=True)
                entry["exception"] = e
            entry["done"] = True
            entry["ended"] = time.monotonic()

        entry["task"] = asyncio.get_running_loop().create_task(run())
        return job_id

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self._jobs.get(job_id)

    def _sweep(self) -> None:
        now = time.monotonic()
        for k in [k for k, v in self._jobs.items() if v["ended"] and now - v["ended"] > JOB_TTL_S]:
            del self._jobs[k]


def run_as(meta: TaskMeta, kwargs: dict[str, Any], job: Job) -> Any:
    """Runs a task's (synchronous) function as `job`: what a process that
    runs jobs other replicas took (Ray's LongTasks, a Modal function) does."""
    token = set_job(job)
    try:
        return meta.fn(**kwargs)
    finally:
        reset_job(token)


class RemoteJobs(Protocol):
    """Jobs run elsewhere and kept there (Modal's function calls, Ray's job
    table actor): any replica of the app can poll any of them, and a
    replica's restart loses none. With `create_app(remote=...)` every
    submit-then-poll job is spawned there, and the tasks it `always` takes
    are spawned even when short."""

    def always(self, meta: TaskMeta) -> bool: ...

    async def spawn(self, meta: TaskMeta, payload: dict[str, Any], job: Job) -> str:
        """The new job's id; raises `JobsFull` when the jobs' home is full."""
        ...

    async def poll(self, job_id: str) -> tuple[str, Any, str | None]:
        """`("running", None, _)`, `("done", result, where)`, `("failed",
        exception, where)` or `("unknown", None, _)` (expired or never
        existed); `where` names what ran it (`X-DWA-Served-By`). A job whose
        process died is a failure with a retryable `TaskError`."""
        ...


def create_app(tasks: dict[str, TaskMeta] | None = None, require_token: bool = False,
               remote: RemoteJobs | None = None) -> FastAPI:
    """The app, serving `tasks` (default: every discovered task). With
    `require_token` (a deployment reachable from the internet: Modal), a
    missing DWA_BACKEND_TOKEN refuses every call but /health, unless
    DWA_BACKEND_PUBLIC=1 says the backend is meant to be open. With `remote`,
    every submit-then-poll job is spawned there instead of in this process."""
    registry = tasks if tasks is not None else discover()
    token = os.environ.get("DWA_BACKEND_TOKEN") or None
    closed = require_token and not token and os.environ.get("DWA_BACKEND_PUBLIC") != "1"
    sync_limit = float(os.environ.get("DWA_SYNC_LIMIT_S", "120"))
    jobs = Jobs()
    app = FastAPI(title="dwa backend", version="0.1.0")

    @app.middleware("http")
    async def auth(request: Request, call_next):
        if closed and request.url.path != "/health":
            return _error(401, "this backend has no DWA_BACKEND_TOKEN: set one (and the host's MODAL_TOKEN to it), "
                          "or DWA_BACKEND_PUBLIC=1 to serve without one", False)
        if token and request.url.path != "/health":
            if request.headers.get("authorization") != f"Bearer {token}":
                return _error(401, "missing or wrong bearer token", False)
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True, "tasks": len(registry)}

    @app.get("/tasks")
    async def catalog() -> dict:
        return {"tasks": [m.catalog_entry() for m in registry.values()]}

    async def call(meta: TaskMeta, kwargs: dict[str, Any], job: Job) -> tuple[Any, str | None]:
        """The task's result, and where it ran if not here (SERVED_BY)."""
        token_ = set_job(job)
        # Through the module: Ray ships this closure pickled by value, and a
        # ContextVar captured as a global cannot be pickled.
        served = task_context.SERVED_BY
        where = served.set(None)
        try:
            if inspect.iscoroutinefunction(meta.fn):
                result = await meta.fn(**kwargs)
            else:
                # Sync code runs in a worker thread; copy the context so the job is visible there.
                result = await run_in_threadpool(meta.fn, **kwargs)
            return result, served.get()
        finally:
            served.reset(where)
            reset_job(token_)

    def outcome(e: Exception, where: str | None = None) -> JSONResponse:
        where = where or getattr(e, "served_by", None)
        if isinstance(e, TaskError):
            return _error(503 if e.retryable else 422, e.message, e.retryable, where)
        return _error(500, f"{type(e).__name__}: {e}", True, where)

    def full(e: JobsFull) -> JSONResponse:
        # Back-pressure: the host waits this long without spending a try of
        # the step (docs/backend-protocol.md).
        return _error(429, str(e), True, retry_after_s=1)

    async def spawn(to: RemoteJobs, meta: TaskMeta, payload: dict[str, Any], job: Job) -> JSONResponse:
        try:
            job_id = await to.spawn(meta, payload, job)
        except JobsFull as e:
            return full(e)
        except Exception as e:
            return outcome(e)
        return JSONResponse({"jobId": job_id, "retryAfterMs": 1000}, status_code=202)

    @app.post("/tasks/{name}")
    async def run(name: str, request: Request):
        meta = registry.get(name)
        if meta is None:
            return _error(404, f"unknown task {name!r}: this backend serves {len(registry)} tasks (GET /tasks)", False)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body must be JSON: {\"input\": {...}, \"taskId\": ..., \"stepId\": ...}", False)
        if not isinstance(body, dict) or not isinstance(body.get("input", {}), dict):
            return _error(400, "the body must be an object whose `input` is an object", False)
        try:
            parsed = meta.input_model.model_validate(body.get("input") or {})
        except ValidationError as e:
            return _error(422, f"{name}: {_validation_message(e)}", False)
        kwargs = call_kwargs(parsed)
        job = Job(task_id=str(body.get("taskId") or "local"), step_id=str(body.get("stepId") or ""),
                  traceparent=_traceparent(request.headers.get("traceparent")))

        if remote is not None and remote.always(meta) and not meta.streaming:
            return await spawn(remote, meta, body.get("input") or {}, job)
        if meta.streaming:
            ndjson = "application/x-ndjson" in request.headers.get("accept", "")
            return StreamingResponse(
                stream(meta, kwargs, job, ndjson),
                media_type="application/x-ndjson" if ndjson else "text/event-stream",
            )
        if request.query_params.get("async") in ("1", "true") or meta.timeout > sync_limit:
            if remote is not None:
                return await spawn(remote, meta, body.get("input") or {}, job)
            try:
                job_id = jobs.start(call(meta, kwargs, job), timeout=meta.timeout)
            except JobsFull as e:
                return full(e)
            return JSONResponse({"jobId": job_id, "retryAfterMs": 500}, status_code=202)
        try:
            result, where = await call(meta, kwargs, job)
        except Exception as e:
            return outcome(e)
        return JSONResponse({"result": result}, headers=_served_by(where))

    async def stream(meta: TaskMeta, kwargs: dict[str, Any], job: Job, ndjson: bool) -> AsyncIterator[str]:
        def frame(obj: Any) -> str:
            text = json.dumps(obj)
            return f"{text}\n" if ndjson else f"data: {text}\n\n"

        chunks: list[Any] = []
        token_ = set_job(job)
        try:
            gen = meta.fn(**kwargs)
            items = gen if inspect.isasyncgen(gen) else iterate_in_threadpool(gen)
            async for chunk in items:
                chunks.append(chunk)
                yield frame(chunk)
            yield frame({"result": merge_chunks(chunks)})
        except TaskError as e:
            yield frame({"error": {"message": e.message, "retryable": e.retryable}})
        except Exception as e:
            yield frame({"error": {"message": f"{type(e).__name__}: {e}", "retryable": True}})
        finally:
            reset_job(token_)

    @app.get("/tasks/{name}/jobs/{job_id}")
    async def poll(name: str, job_id: str):
        if remote is not None:
            state, value, where = await remote.poll(job_id)
            if state == "running":
                return JSONResponse({"jobId": job_id, "status": "running", "retryAfterMs": 1000}, status_code=202)
            if state == "done":
                return JSONResponse({"result": value}, headers=_served_by(where))
            if state == "failed":
                return outcome(value, where)
            return _error(503, f"no job {job_id!r}: it expired or never existed; run the step again", True)
        entry = jobs.get(job_id)
        if entry is None:
            # Its process restarted, another replica answered, or it ended
            # more than JOB_TTL_S ago: retryable, so that the host runs the
            # step again rather than failing it (docs/backend-protocol.md).
            return _error(503, f"no job {job_id!r} on this backend: it restarted since, or the job ended "
                               f"more than {JOB_TTL_S:.0f} s ago; run the step again", True)
        if not entry["done"]:
            return JSONResponse({"jobId": job_id, "status": "running", "retryAfterMs": 500}, status_code=202)
        if "exception" in entry:
            return outcome(entry["exception"])
        return JSONResponse({"result": entry["result"]}, headers=_served_by(entry.get("served_by")))

    return app
