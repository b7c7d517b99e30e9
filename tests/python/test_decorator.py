"""The @task decorator, schema generation and discovery."""

from __future__ import annotations

from typing import Iterator, Literal

import pydantic
import pytest
from typing_extensions import TypedDict

from shared.tasks import REGISTRY, ChunkConfig, discover, task
from shared.tasks.types import CATEGORIES


class Out(TypedDict):
    n: int
    tags: list[str]


def test_schema_from_type_hints():
    @task("demo.schema", category="think", gpu="T4", timeout=30,
          chunk=ChunkConfig(input="text", default_size=100, overlap=10, merge="concat_text"))
    def demo(text: str, mode: Literal["a", "b"] = "a", limit: int | None = None) -> Out:
        """Demonstrates schemas.

        More words here."""
        return {"n": len(text), "tags": []}

    meta = REGISTRY.pop("demo.schema")
    assert meta.description == "Demonstrates schemas."
    s = meta.input_schema
    assert s["type"] == "object" and s["required"] == ["text"]
    assert s["additionalProperties"] is False
    assert s["properties"]["mode"]["enum"] == ["a", "b"]
    assert meta.output_schema["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    entry = meta.catalog_entry()
    assert entry["gpu"] == "T4" and entry["timeout"] == 30.0
    assert entry["chunk"] == {"input": "text", "defaultSize": 100, "overlap": 10, "merge": "concat_text", "kind": "audio"}
    # The input model refuses unknown fields and wrong types, naming the field.
    with pytest.raises(pydantic.ValidationError) as extra:
        meta.input_model.model_validate({"text": "x", "nope": 1})
    assert [(e["type"], e["loc"]) for e in extra.value.errors()] == [("extra_forbidden", ("nope",))]
    with pytest.raises(pydantic.ValidationError) as wrong:
        meta.input_model.model_validate({"text": 3})
    assert [(e["type"], e["loc"]) for e in wrong.value.errors()] == [("string_type", ("text",))]


def test_streaming_tasks_merge_text():
    @task("demo.stream", category="think", streaming=True)
    def stream(prompt: str) -> Iterator[str]:
        yield prompt

    meta = REGISTRY.pop("demo.stream")
    assert meta.streaming and meta.output_schema == {"type": "string"}


@pytest.mark.parametrize(
    "kwargs, fn_src, message",
    [
        ({"name": "Bad Name", "category": "see"}, "def f(x: int) -> int: ...", "dotted lowercase"),
        ({"name": "a.b", "category": "smell"}, "def f(x: int) -> int: ...", "category 'smell'"),
        ({"name": "a.b", "category": "see", "gpu": "TPU"}, "def f(x: int) -> int: ...", "gpu 'TPU'"),
        ({"name": "a.b", "category": "see", "timeout": 0}, "def f(x: int) -> int: ...", "timeout"),
        ({"name": "a.b", "category": "see", "ram": 0}, "def f(x: int) -> int: ...", "ram must be between 0 and 4096 GiB"),
        ({"name": "a.b", "category": "see", "ram": 1e6}, "def f(x: int) -> int: ...", "ram must be between"),
        ({"name": "a.b", "category": "see"}, "def f(x) -> int: ...", "no type hint"),
        ({"name": "a.b", "category": "see"}, "def f(x: int): ...", "return type"),
        ({"name": "a.b", "category": "see"}, "def f(*xs: int) -> int: ...", "*args"),
        ({"name": "a.b", "category": "see", "streaming": True}, "def f(x: int) -> int: ...", "generator"),
        ({"name": "a.b", "category": "see", "chunk": ChunkConfig(input="y", default_size=1)},
         "def f(x: int) -> int: ...", "chunk.input 'y'"),
    ],
)
def test_bad_declarations_are_refused(kwargs, fn_src, message):
    ns: dict = {}
    exec(fn_src, ns)
    with pytest.raises((ValueError, TypeError)) as e:
        task(**kwargs)(ns["f"])
    assert message in str(e.value)
    REGISTRY.pop("a.b", None)


def test_chunk_config_checks():
    with pytest.raises(ValueError, match="overlap"):
        ChunkConfig(input="x", default_size=10, overlap=10)
    with pytest.raises(ValueError, match="merge"):
        ChunkConfig(input="x", default_size=10, merge="zip")  # type: ignore[arg-type]


def test_discovery_finds_every_task_in_its_category_folder():
    tasks = discover()
    assert len(tasks) >= 50
    for name, meta in tasks.items():
        assert meta.category in CATEGORIES
        assert meta.module.startswith(f"shared.tasks.{meta.category}.")
        assert meta.input_schema["type"] == "object", name
        assert meta.description and meta.description != name, f"{name} has no docstring"
    assert {m.category for m in tasks.values()} == set(CATEGORIES)
