"""dwa's Python tasks: functions registered with `@task`, grouped by category
folder (see/ hear/ think/ speak/ get/ transform/ find/ watch/), served by the
backends under `backends/` over the backend protocol."""

from .decorator import REGISTRY, task
from .discovery import catalog, discover
from .errors import MissingDependency, TaskError
from .types import ChunkConfig, TaskMeta

__all__ = ["REGISTRY", "ChunkConfig", "MissingDependency", "TaskError", "TaskMeta", "catalog", "discover", "task"]
