"""Finds every task: imports each module under the category folders, which
registers its `@task` functions. Importing must not need the tasks' heavy
libraries (they are imported inside the functions)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from .decorator import REGISTRY
from .types import CATEGORIES, TaskMeta

_HERE = Path(__file__).resolve().parent


def discover() -> dict[str, TaskMeta]:
    """Imports every task module once; answers the registry by name."""
    errors = []
    for category in CATEGORIES:
        folder = _HERE / category
        if not folder.is_dir():
            continue
        for info in pkgutil.iter_modules([str(folder)]):
            if info.name.startswith("_"):
                continue
            module = f"{__package__}.{category}.{info.name}"
            try:
                importlib.import_module(module)
            except Exception as e:  # one broken module must not hide the others
                errors.append(f"{module}: {type(e).__name__}: {e}")
    if errors:
        raise ImportError("task modules failed to import:\n" + "\n".join(errors))
    found = {}
    for name, meta in sorted(REGISTRY.items()):
        if not meta.module.startswith(f"{__package__}."):
            continue  # registered by other code (a test, say): not part of the catalog
        if not meta.module.startswith(f"{__package__}.{meta.category}."):
            raise ImportError(f"task {meta.name} is in category {meta.category!r} but lives in {meta.module}")
        found[name] = meta
    return found


def catalog() -> list[dict]:
    """The catalog entries of every task, sorted by name."""
    return [m.catalog_entry() for m in discover().values()]
