"""How the Ray backend's deployments scale and what each replica asks of
Ray: read from a TOML file (`backends/ray/deployments.toml`, or the path in
DWA_RAY_CONFIG / `--config`), checked whole before anything is deployed.

Sections: `[ingress]` (the protocol and short CPU tasks), `[long]` (CPU
jobs submitted then polled), `[gpu]` (every GPU task family) and
`[family.NAME]` (one family, over `[gpu]`). A family is the first word of
a task's name (`yolo.detect` → `yolo`): tasks of a family load the same
models, so they share replicas. docs/backends.md has the file's keys.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).with_name("deployments.toml")
_KEYS = {"min_replicas", "max_replicas", "target_ongoing_requests", "max_ongoing_requests", "num_cpus", "num_gpus"}
_SECTIONS = {"ingress", "long", "gpu", "family"}
_FAMILY = re.compile(r"^[a-z][a-z0-9_-]*$")
#: Replicas one deployment may ask for: a typo (10000) must not flood a cluster.
MAX_REPLICAS = 1000


class ConfigError(ValueError):
    """The deployments file is unreadable or names a key or value it must not."""


@dataclass(frozen=True)
class Scale:
    """One deployment's replicas and resources."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0
    max_ongoing_requests: int = 8
    num_cpus: float = 1.0
    #: None: one GPU per replica when the cluster has one, else none.
    num_gpus: float | None = None

    def autoscaling(self) -> dict[str, Any]:
        """Serve's `autoscaling_config`."""
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }


@dataclass(frozen=True)
class Config:
    """Every deployment's scale; families not named take `gpu`."""

    ingress: Scale = Scale(min_replicas=1, max_replicas=4, target_ongoing_requests=16, max_ongoing_requests=100)
    long: Scale = Scale(min_replicas=1, max_replicas=4, target_ongoing_requests=8, max_ongoing_requests=32)
    gpu: Scale = Scale(min_replicas=0, max_replicas=2, target_ongoing_requests=2, max_ongoing_requests=4)
    families: dict[str, Scale] = field(default_factory=dict)

    def family(self, name: str) -> Scale:
        return self.families.get(name, self.gpu)


def family_of(task_name: str) -> str:
    """The family of a task: the first word of its name."""
    return task_name.split(".", 1)[0]


def _scale(base: Scale, table: Any, where: str) -> Scale:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of {', '.join(sorted(_KEYS))}")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]} is not a key; the keys are {', '.join(sorted(_KEYS))}")
    for key, value in table.items():
        whole = key in ("min_replicas", "max_replicas", "max_ongoing_requests")
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            raise ConfigError(f"{where}.{key} must be {'a whole number' if whole else 'a number'}, got {value!r}")
        may_be_zero = key in ("min_replicas", "num_cpus", "num_gpus")
        if value < 0 or (value == 0 and not may_be_zero):
            raise ConfigError(f"{where}.{key} must be {'≥ 0' if may_be_zero else '> 0'}, got {value}")
        if key.endswith("_replicas") and value > MAX_REPLICAS:
            raise ConfigError(f"{where}.{key} must be at most {MAX_REPLICAS}, got {value}")
    scale = replace(base, **table)
    if scale.min_replicas > scale.max_replicas:
        raise ConfigError(f"{where}: min_replicas {scale.min_replicas} is above max_replicas {scale.max_replicas}")
    return scale


def parse(text: str, source: str = "deployments file") -> Config:
    """The config a TOML text describes, over the defaults."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: {e}") from None
    unknown = sorted(set(data) - _SECTIONS)
    if unknown:
        raise ConfigError(f"{source}: [{unknown[0]}] is not a section; the sections are "
                          "[ingress], [long], [gpu] and [family.NAME]")
    base = Config()
    ingress = _scale(base.ingress, data.get("ingress", {}), f"{source}: ingress")
    long = _scale(base.long, data.get("long", {}), f"{source}: long")
    gpu = _scale(base.gpu, data.get("gpu", {}), f"{source}: gpu")
    families_table = data.get("family", {})
    if not isinstance(families_table, dict):
        raise ConfigError(f"{source}: family must be tables [family.NAME]")
    families = {}
    for name, table in families_table.items():
        if not _FAMILY.match(name):
            raise ConfigError(f"{source}: [family.{name}]: a family is the first word of task names, e.g. yolo")
        families[name] = _scale(gpu, table, f"{source}: family.{name}")
    return Config(ingress=ingress, long=long, gpu=gpu, families=families)


def load(path: str | os.PathLike | None = None) -> Config:
    """The config of `path`, else of DWA_RAY_CONFIG, else the shipped file."""
    chosen = Path(path or os.environ.get("DWA_RAY_CONFIG") or DEFAULT_PATH)
    try:
        text = chosen.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the Ray deployments file {chosen}: {e.strerror}") from None
    return parse(text, str(chosen))
