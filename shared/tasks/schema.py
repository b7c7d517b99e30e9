"""JSON Schemas for a task's input and output, from its type hints.

The input schema is an object whose properties are the function's
parameters (required when they have no default); the output schema comes
from the return annotation (a TypedDict, a pydantic model, a list, ...).
References are inlined so that the host's schema checker, which does not
follow `$ref`, sees every constraint.
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model


def input_model(fn: Callable[..., Any], name: str) -> type[BaseModel]:
    """A pydantic model of the function's parameters: extra fields refused,
    unless the function takes `**kwargs: T` (an input keyed by names the task
    cannot know, e.g. the ids of the steps whose results it merges), whose
    values must then be `T`s."""
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    extra: Any = None
    for pname, p in sig.parameters.items():
        if pname not in hints:
            raise TypeError(f"task {name}: parameter {pname!r} has no type hint")
        if p.kind == p.VAR_POSITIONAL:
            raise TypeError(f"task {name}: *args cannot be described as input; name each parameter")
        if p.kind == p.VAR_KEYWORD:
            extra = hints[pname]
            continue
        default = ... if p.default is p.empty else p.default
        fields[pname] = (hints[pname], default)
    model_name = "".join(part.capitalize() for part in name.replace("-", ".").split(".")) + "Input"
    if extra is None:
        return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
    base = create_model(model_name + "Fields", __config__=ConfigDict(extra="allow"), **fields)
    # pydantic validates extra fields against the annotation of `__pydantic_extra__`.
    return type(model_name, (base,), {"__annotations__": {"__pydantic_extra__": dict[str, extra]}})


def call_kwargs(parsed: BaseModel) -> dict[str, Any]:
    """The keyword arguments a validated input calls its function with (its
    fields, and the extra ones of a `**kwargs` task)."""
    kwargs = {k: getattr(parsed, k) for k in type(parsed).model_fields}
    kwargs.update(parsed.model_extra or {})
    return kwargs


def output_type(fn: Callable[..., Any], name: str, streaming: bool) -> Any:
    """The type the task answers: for a streaming task, the type of one chunk."""
    hints = typing.get_type_hints(fn, include_extras=True)
    if "return" not in hints:
        raise TypeError(f"task {name}: the return type has no type hint")
    ret = hints["return"]
    if streaming:
        origin = typing.get_origin(ret)
        iterables = (
            collections.abc.Iterator,
            collections.abc.Iterable,
            collections.abc.Generator,
            collections.abc.AsyncIterator,
            collections.abc.AsyncIterable,
            collections.abc.AsyncGenerator,
        )
        if origin not in iterables:
            raise TypeError(f"task {name}: a streaming task returns an Iterator[...] of chunks, not {ret!r}")
        return typing.get_args(ret)[0]
    return ret


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = defs[ref.removeprefix("#/$defs/")]
            merged = {k: v for k, v in node.items() if k != "$ref"}
            return _inline({**target, **merged}, defs)
        return {k: _inline(v, defs) for k, v in node.items() if k not in ("$defs", "title")}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def clean(schema: dict[str, Any]) -> dict[str, Any]:
    """Inlines `$defs` and drops titles (noise in a catalog)."""
    return _inline(schema, schema.get("$defs", {}))


def schemas(fn: Callable[..., Any], name: str, streaming: bool) -> tuple[type[BaseModel], dict[str, Any], dict[str, Any]]:
    """(input model, input schema, output schema) for a task function."""
    model = input_model(fn, name)
    out = output_type(fn, name, streaming)
    out_schema = clean(TypeAdapter(out).json_schema())
    if streaming:
        # The final result merges the chunks: text joined, anything else listed.
        out_schema = out_schema if out_schema.get("type") == "string" else {"type": "array", "items": out_schema}
    return model, clean(model.model_json_schema()), out_schema
