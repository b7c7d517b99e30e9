//! Builtin tasks, for diagnostics, tests and benchmarks only (`builtin.*`).
//! They do no real work: `echo` returns its input, `sleep` waits, `fail`
//! fails on purpose, `range` makes a list to fan out over.

use std::time::Duration;

use serde_json::{Value, json};

use dwa_core::step::StepError;

/// Runs a builtin task; `attempt` is 1 for the first try.
pub(crate) async fn run(task: &str, input: Value, attempt: u32) -> Result<Value, StepError> {
    match task {
        "builtin.echo" => Ok(input),
        "builtin.merge" => dwa_core::chunking::merge(&input).map_err(StepError::permanent),
        "builtin.sleep" => {
            let ms = input.get("ms").and_then(Value::as_u64).ok_or_else(|| {
                StepError::permanent("builtin.sleep needs input field `ms` (a whole number)")
            })?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(input)
        }
        "builtin.fail" => {
            let message = input
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("builtin.fail failed on purpose")
                .to_owned();
            let retryable = input
                .get("retryable")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            match input.get("failAttempts").and_then(Value::as_u64) {
                Some(n) if u64::from(attempt) > n => {
                    Ok(json!({"attempt": attempt, "input": input}))
                }
                _ => Err(StepError {
                    message: format!("{message} (attempt {attempt})"),
                    retryable,
                    busy_for: None,
                }),
            }
        }
        "builtin.range" => {
            let n = input
                .get("n")
                .and_then(Value::as_u64)
                .filter(|n| *n <= 1_000_000)
                .ok_or_else(|| {
                    StepError::permanent("builtin.range needs input field `n` from 0 to 1000000")
                })?;
            Ok(Value::Array((0..n).map(Value::from).collect()))
        }
        other => Err(StepError::permanent(format!(
            "unknown builtin task {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builtins_behave() {
        assert_eq!(
            run("builtin.echo", json!({"a": 1}), 1).await.unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            run("builtin.range", json!({"n": 3}), 1).await.unwrap(),
            json!([0, 1, 2])
        );
        let e = run("builtin.fail", json!({"retryable": false}), 1)
            .await
            .unwrap_err();
        assert!(!e.retryable);
        assert!(
            run("builtin.fail", json!({"failAttempts": 1}), 1)
                .await
                .is_err()
        );
        assert!(
            run("builtin.fail", json!({"failAttempts": 1}), 2)
                .await
                .is_ok()
        );
        let e = run("builtin.sleep", json!({}), 1).await.unwrap_err();
        assert!(e.message.contains("`ms`"));
    }
}
