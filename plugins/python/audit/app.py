"""`audit`: an effect written in Python (componentize-py) to show that the
dwa:plugin WIT works outside Rust. It emits an `audit` event recording the
lifecycle point, the task's status and the config's `label`, and logs it."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import PluginError


def fail(message: str) -> Err:
    return Err(PluginError(message=message, retryable=False))


class Effect(exports.Effect):
    def handle(self, call) -> str:
        try:
            config = json.loads(call.config)
            task = json.loads(call.task)
        except ValueError as e:
            raise fail(f"audit: bad JSON from the host: {e}")
        label = config.get("label")
        if not isinstance(label, str) or not label:
            raise fail("audit: `label` is required (a non-empty string)")
        record = {
            "label": label,
            "lifecycle": call.lifecycle,
            "taskId": call.task_id,
            "status": task.get("status"),
            "writtenIn": "python",
        }
        host.log(host.LogLevel.INFO, f"audit {label}: {call.lifecycle} -> {task.get('status')}")
        try:
            host.emit("audit", json.dumps(record))
        except Err as e:
            raise fail(f"audit: emit refused: {e.value}")
        return json.dumps(record)
