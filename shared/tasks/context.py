"""What a running task knows of its call: the dwa task and step it serves,
and the task's working folder, where it reads and writes files.

The folder is `DWA_WORK_DIR/<taskId>` (default `./data/work/<taskId>`): the
same layout as the host's, so that a backend on the host's machine (the
local backend) shares files with the host's WebAssembly transforms. File
names in inputs and outputs are names inside it: absolute paths, `..` and
symbolic links that lead out are refused.
"""

from __future__ import annotations

import contextvars
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import TaskError


@dataclass(frozen=True)
class Job:
    """The call being served."""

    task_id: str = "local"
    step_id: str = ""
    #: The W3C `traceparent` of the host's call (docs/backend-protocol.md,
    #: "Traces"): a task's own spans made its children join the dwa task's trace.
    traceparent: str | None = None


_current: contextvars.ContextVar[Job] = contextvars.ContextVar("dwa_job", default=Job())
_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def set_job(job: Job) -> contextvars.Token:
    """Marks the call being served (the server does this per request)."""
    return _current.set(job)


def reset_job(token: contextvars.Token) -> None:
    _current.reset(token)


def job() -> Job:
    return _current.get()


def work_root() -> Path:
    return Path(os.environ.get("DWA_WORK_DIR") or Path(os.environ.get("DWA_DATA_DIR", "./data")) / "work")


# Marks a folder as made by dwa for a task: the host removes a working
# folder only when it holds this file (docs/configuration.md, DWA_WORK_DIR).
WORKDIR_MARKER = ".dwa-workdir"


def workdir() -> Path:
    """The current task's working folder, made (and marked) on first use."""
    tid = job().task_id
    if not _SAFE.match(tid):
        raise TaskError(f"task id {tid!r} cannot name a working folder")
    d = work_root() / tid
    d.mkdir(parents=True, exist_ok=True)
    marker = d / WORKDIR_MARKER
    if not marker.exists():
        marker.write_text("made by dwa for this task; removed with it\n")
    return d


def _inside(p: Path, given: str, field: str) -> Path:
    """`p` when it stays inside the working folder once links are followed."""
    root = workdir().resolve()
    real = p.resolve()
    if real != root and root not in real.parents:
        raise TaskError(f"`{field}` {given!r} leads out of the task's working folder: "
                        "name a file inside it (no absolute paths, '..' or links out)")
    return p


def resolve(path: str, field: str = "path", must_exist: bool = True) -> Path:
    """A file named in an input: a name inside the working folder. Absolute
    paths, `..` and links that lead out are refused, so that a task reads
    only what its own steps wrote there."""
    if not path:
        raise TaskError(f"`{field}` must not be empty")
    if Path(path).is_absolute():
        raise TaskError(f"`{field}` {path!r} is an absolute path: name a file inside the task's working folder")
    p = _inside(workdir() / path, path, field)
    if must_exist and not p.is_file():
        raise TaskError(f"`{field}` {path}: no such file")
    return p


def output(name: str, field: str = "filename") -> Path:
    """Where to write an output file of that name (inside the working folder)."""
    if not name or Path(name).is_absolute():
        raise TaskError(f"`{field}` {name!r} must name a file inside the task's working folder")
    p = _inside(workdir() / name, name, field)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def relative(p: Path) -> str:
    """How an output file is named in a result: relative to the working folder when inside it."""
    try:
        return str(p.resolve().relative_to(workdir().resolve()))
    except ValueError:
        return str(p)


#: Where a task ran when not in the process that answers (set by a task
#: function that forwards the call, e.g. to a Ray GPU family's deployment); the
#: backend app answers it in the `X-DWA-Served-By` header.
SERVED_BY: contextvars.ContextVar[str | None] = contextvars.ContextVar("dwa_served_by", default=None)
