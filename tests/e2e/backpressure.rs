//! Back-pressure (docs/backend-protocol.md): a backend that answers 429
//! with `Retry-After` makes the step wait as asked, without spending one of
//! its tries, and `GET /api/backends` shows it saturated meanwhile.

use serde_json::json;

use super::common::*;
use super::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_backend_defers_the_step_without_spending_its_tries() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    // One try only: a 429 that counted as a try would fail the task.
    let id = submit_ok(
        &host,
        &json!({"type": "busy", "payload": {"busy": 2, "retryAfter": "1"},
                "retry": {"attempts": 1}}),
    )
    .await;
    // While the backend is saturated, the host says so.
    saturated_until(&host).await;
    let done = wait_done(&host, &id).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["result"]["calls"], 3, "{done:#}");
    assert_eq!(fake.calls_of("busy").len(), 3);
    let events = read_events(&host.base, &id).await;
    let waiting: Vec<_> = events.iter().filter(|(k, _)| k == "step:waiting").collect();
    assert_eq!(waiting.len(), 1, "announced once: {events:#?}");
    let reason = waiting[0].1["data"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("backend saturated") && reason.contains("queue full"),
        "{reason}"
    );
    assert!(!has(&events, "step:retry"), "no try was spent: {events:#?}");
    // It is not saturated any more.
    let backends = get_json(&host, "/api/backends").await;
    assert!(backends[0].get("saturatedUntil").is_none(), "{backends}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_is_bounded() {
    let fake = Fake::start().await;
    let (_d, host) = start(&fake, &[]);
    // A backend asking for a day (or for nothing, or nonsense) is held to
    // 100 ms - 5 min; "0" waits the 100 ms floor and the task completes.
    let id = submit_ok(
        &host,
        &json!({"type": "busy", "payload": {"busy": 1, "retryAfter": "0"}, "retry": {"attempts": 1}}),
    )
    .await;
    assert_eq!(wait_done(&host, &id).await["status"], "completed");
    let id = submit_ok(
        &host,
        &json!({"type": "busy", "payload": {"busy": 1, "retryAfter": "86400"}, "retry": {"attempts": 1}}),
    )
    .await;
    let _ = id;
    let until = saturated_until(&host).await;
    let at = dwa_core::model::parse_rfc3339(&until).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ahead = at - now;
    assert!(
        (200_000..=300_000).contains(&ahead),
        "a day is cut to 5 min: {ahead} ms ({until})"
    );
}

/// Waits (bounded) until `GET /api/backends` shows `local` saturated; its `saturatedUntil`.
async fn saturated_until(host: &Host) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let backends = get_json(host, "/api/backends").await;
        let until = backends
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == "local"))
            .and_then(|b| b["saturatedUntil"].as_str())
            .map(str::to_owned);
        if let Some(until) = until {
            return until;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backend never showed saturated: {backends}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
