"""Metadata the `@task` decorator records: what the catalog announces, what
backends need to place a task (GPU, timeout) and how the host may split it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

Category = Literal["see", "hear", "think", "speak", "get", "transform", "find", "watch"]
CATEGORIES: tuple[str, ...] = ("see", "hear", "think", "speak", "get", "transform", "find", "watch")

ChunkKind = Literal["audio", "video", "text"]
MergeStrategy = Literal["concat_segments", "concat_text", "concat_lists", "sum_counts"]
MERGE_STRATEGIES: tuple[str, ...] = ("concat_segments", "concat_text", "concat_lists", "sum_counts")


@dataclass(frozen=True)
class ChunkConfig:
    """How the host may split one call into chunk jobs run in parallel.

    `input` names the input field holding the media file (or text) to split,
    `kind` what it is (`audio`, `video` or `text`: the host splits it with
    chunk.audio, chunk.video or chunk.text), `default_size` a chunk's length
    (seconds for audio/video, characters for text), `overlap` how much
    consecutive chunks share, and `merge` the strategy that joins the chunk
    results (`concat_segments` shifts each part's `segments` by its chunk's
    start time).
    """

    input: str
    default_size: float
    overlap: float = 0.0
    merge: MergeStrategy = "concat_segments"
    kind: ChunkKind = "audio"

    def __post_init__(self) -> None:
        if self.default_size <= 0:
            raise ValueError(f"chunk.default_size must be positive, got {self.default_size}")
        if not 0 <= self.overlap < self.default_size:
            raise ValueError(
                f"chunk.overlap must be at least 0 and smaller than default_size ({self.default_size}), got {self.overlap}"
            )
        if self.merge not in MERGE_STRATEGIES:
            raise ValueError(f"chunk.merge {self.merge!r} is not one of {', '.join(MERGE_STRATEGIES)}")
        if self.kind not in ("audio", "video", "text"):
            raise ValueError(f"chunk.kind {self.kind!r} is not one of audio, video, text")

    def to_json(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "defaultSize": self.default_size,
            "overlap": self.overlap,
            "merge": self.merge,
            "kind": self.kind,
        }


@dataclass
class TaskMeta:
    """One registered task: its metadata and the function that runs it."""

    name: str
    category: str
    description: str
    fn: Callable[..., Any]
    capabilities: tuple[str, ...] = ()
    gpu: str | None = None
    #: Host memory (GiB) a call needs: what the Ray backend reserves per replica.
    ram: float | None = None
    timeout: float = 300.0
    chunk: ChunkConfig | None = None
    streaming: bool = False
    module: str = ""
    input_schema: dict[str, Any] = field(default_factory=dict)
    output_schema: dict[str, Any] = field(default_factory=dict)
    #: The pydantic model that validates (and coerces) an input.
    input_model: Any = field(default=None, repr=False, compare=False)
    #: Result field of the step before → parameter, for a step without `input`.
    pipe: dict[str, str] = field(default_factory=dict)
    #: Set on a former name: the task's current name.
    replaced_by: str | None = None

    def catalog_entry(self) -> dict[str, Any]:
        """The entry `GET /tasks` announces (docs/backend-protocol.md)."""
        return {
            "name": self.name,
            "category": self.category,
            "description": self.description,
            "capabilities": list(self.capabilities),
            "gpu": self.gpu,
            "timeout": self.timeout,
            "streaming": self.streaming,
            "chunk": self.chunk.to_json() if self.chunk else None,
            "inputSchema": self.input_schema,
            "outputSchema": self.output_schema,
            "pipe": self.pipe or None,
            "replacedBy": self.replaced_by,
        }
