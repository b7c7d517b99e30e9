//! `enqueue`: submits the config's `task` (a whole task object) as a new task.

use dwa_plugin_sdk::{Effect, EffectCall, PluginError, Value, config, emit, fail, host, json};

struct Enqueue;

impl Effect for Enqueue {
    fn handle(call: EffectCall) -> Result<String, PluginError> {
        let cfg = config(&call)?;
        let task = match cfg.get("task") {
            Some(t @ Value::Object(_)) => t,
            Some(_) => return Err(fail("enqueue: `task` must be a task object")),
            None => return Err(fail("enqueue: `task` is required")),
        };
        let id = host::enqueue(&task.to_string()).map_err(|e| fail(format!("enqueue: {e}")))?;
        emit("enqueued", &json!({"taskId": id, "from": call.task_id}))?;
        Ok(json!({"taskId": id}).to_string())
    }
}

dwa_plugin_sdk::export_effect!(Enqueue);
