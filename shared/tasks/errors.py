"""The error a task raises to say what went wrong and whether a retry may help."""

import importlib
from types import ModuleType


class TaskError(Exception):
    """A task failure with a message for the task's `error` and a retry hint.

    `retryable=False` for bad input or a permanent refusal (the host never
    retries those); `True` for what may pass later (a 5xx, a timeout upstream).
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class MissingDependency(TaskError):
    """A library (or model weights) the task needs is not installed here."""

    def __init__(self, task: str, package: str, hint: str = "") -> None:
        extra = f"; {hint}" if hint else ""
        super().__init__(
            f"{task} needs the Python package {package!r}, which is not installed on this backend{extra}",
            retryable=False,
        )


def require(task: str, package: str, module: str, hint: str = "") -> ModuleType:
    """Imports `module` for `task`: an optional library that is missing here
    becomes a MissingDependency naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(task, package, hint) from None
