"""`@task`: registers a Python function as a dwa task with its metadata.

```python
@task("download.file", category="get", capabilities=["network"], timeout=600)
def download_file(url: str, filename: str | None = None) -> Downloaded:
    ...
```

The function's parameters are the task's input (their type hints become the
input's JSON Schema) and its return annotation the output's. Heavy libraries
are imported inside the function so that the catalog loads without them.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, Callable, Iterable, TypeVar

from .schema import schemas
from .types import CATEGORIES, ChunkConfig, TaskMeta

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$")
_GPUS = ("T4", "L4", "A10G", "A100", "A100-80GB", "H100", "any")

#: Every task registered so far, by name.
REGISTRY: dict[str, TaskMeta] = {}


def task(
    name: str,
    *,
    category: str,
    capabilities: Iterable[str] = (),
    gpu: str | None = None,
    ram: float | None = None,
    timeout: float = 300.0,
    chunk: ChunkConfig | None = None,
    streaming: bool = False,
    description: str | None = None,
    pipe: dict[str, str] | None = None,
    aliases: Iterable[str] = (),
) -> Callable[[F], F]:
    """Registers the decorated function as task `name` (e.g. `yolo.detect`).

    `pipe` maps fields of the result of the step before to parameters, for a
    step written without `input` (e.g. `{"path": "video_path"}` takes
    download.file's file); `aliases` are former names, still served and
    listed as deprecated (docs/tasks.md, "Names"); `ram` is the host memory
    (GiB) a call needs beside its GPU's, which the Ray backend reserves for
    the replicas of the task's family (docs/backends.md)."""
    for n in (name, *aliases):
        if not _NAME.match(n):
            raise ValueError(f"task name {n!r} must be dotted lowercase words, e.g. yolo.detect")
    if category not in CATEGORIES:
        raise ValueError(f"task {name}: category {category!r} is not one of {', '.join(CATEGORIES)}")
    if gpu is not None and gpu not in _GPUS:
        raise ValueError(f"task {name}: gpu {gpu!r} is not one of {', '.join(_GPUS)}")
    if ram is not None and not 0 < ram <= 4096:
        raise ValueError(f"task {name}: ram must be between 0 and 4096 GiB, got {ram}")
    if not 0 < timeout <= 86_400:
        raise ValueError(f"task {name}: timeout must be between 0 and 86400 seconds, got {timeout}")
    if chunk is not None and not isinstance(chunk, ChunkConfig):
        raise TypeError(f"task {name}: chunk must be a ChunkConfig")

    def register(fn: F) -> F:
        if streaming and not (inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)):
            raise TypeError(f"task {name}: streaming=True needs a generator function (yield chunks)")
        if name in REGISTRY and REGISTRY[name].fn.__qualname__ != fn.__qualname__:
            other = REGISTRY[name]
            raise ValueError(f"task {name} is registered twice: {other.module}.{other.fn.__qualname__} and {fn.__module__}.{fn.__qualname__}")
        model, input_schema, output_schema = schemas(fn, name, streaming)
        params = input_schema.get("properties", {})
        if chunk is not None and chunk.input not in params:
            raise ValueError(f"task {name}: chunk.input {chunk.input!r} is not one of its parameters")
        for field_, param in (pipe or {}).items():
            if param not in params:
                raise ValueError(f"task {name}: pipe maps {field_!r} to {param!r}, which is not one of its parameters")
        doc = inspect.getdoc(fn) or ""
        meta = TaskMeta(
            name=name,
            category=category,
            description=description or (doc.split("\n\n")[0].replace("\n", " ") if doc else name),
            fn=fn,
            capabilities=tuple(capabilities),
            gpu=gpu,
            ram=float(ram) if ram is not None else None,
            timeout=float(timeout),
            chunk=chunk,
            streaming=streaming,
            module=fn.__module__,
            input_schema=input_schema,
            output_schema=output_schema,
            input_model=model,
            pipe=dict(pipe or {}),
        )
        REGISTRY[name] = meta
        for old in aliases:
            if old in REGISTRY and REGISTRY[old].replaced_by != name:
                raise ValueError(f"task {name}: alias {old} is already a task")
            REGISTRY[old] = dataclasses.replace(meta, name=old, replaced_by=name,
                                                description=f"Deprecated: use {name}. {meta.description}")
        fn.__dwa_task__ = meta  # type: ignore[attr-defined]
        return fn

    return register
