//! `{{ x | calls }}`: how many calls this instance has served. A plugin that
//! keeps state between calls, for the tests of instance reuse (a pure
//! plugin's instance serves one task only).

use std::sync::atomic::{AtomicU64, Ordering};

use dwa_functions_sdk::{Functions, PluginError, Value, fail};

static CALLS: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl Functions for Counter {
    fn call(name: String, _json: String) -> Result<String, PluginError> {
        if name != "calls" {
            return Err(fail(format!("counter has no function {name:?}")));
        }
        let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Value::from(n).to_string())
    }
}

dwa_functions_sdk::export_functions!(Counter);
