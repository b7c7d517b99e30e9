"""Diagnostics: a task that does nothing, to measure the host → backend hop."""

from __future__ import annotations

from typing import Any

from ..decorator import task


@task("diag.echo", category="transform", timeout=10)
def diag_echo(value: Any = None) -> Any:
    """Returns `value` unchanged (diagnostics and the backend-hop benchmark)."""
    return value
