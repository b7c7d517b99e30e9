//! Reads each configured backend's catalog (`GET {base}/tasks`) and merges
//! them with the builtin tasks, keeping a backend's last known tasks when it
//! cannot be reached so that a blip does not make its tasks "unknown".

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::Engine;
use dwa_core::catalog::Catalog;

/// What the last catalog read of one backend gave, for `/health`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    /// `modal`, `ray` or `local`.
    pub name: String,
    /// Its base URL.
    pub url: String,
    /// Whether the last read worked.
    pub ok: bool,
    /// Tasks it serves (as last known).
    pub tasks: usize,
    /// Why the last read failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Until when it asked the host to wait (its last HTTP 429; RFC 3339),
    /// while that is ahead (docs/backend-protocol.md, "Back-pressure").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saturated_until: Option<String>,
}

/// `statuses` (the last catalog reads) with each backend's saturation now.
pub fn with_saturation(engine: &Engine, mut statuses: Vec<BackendStatus>) -> Vec<BackendStatus> {
    for s in &mut statuses {
        s.saturated_until = engine
            .executor()
            .backends()
            .find(|b| b.name == s.name)
            .and_then(|b| b.saturated_until())
            .map(dwa_core::model::rfc3339);
    }
    statuses
}

/// Re-reads every backend's catalog and swaps the merged catalog into the engine.
pub async fn refresh(engine: &Arc<Engine>) -> Vec<BackendStatus> {
    let old = engine.catalog();
    let mut next = Catalog::with_builtins();
    next.set_generated(old.generated());
    // The plugin host is the source of truth for what plugins provide (it hot-reloads).
    match engine.plugins() {
        Some(p) => next.set_plugins(p.provides()),
        None => next.set_effects(old.effects()),
    }
    let mut statuses = Vec::new();
    let backends: Vec<_> = engine.executor().backends().cloned().collect();
    let fetched = futures::future::join_all(backends.iter().map(|b| b.fetch_catalog())).await;
    for (b, result) in backends.iter().zip(fetched) {
        next.add_backend(&b.name);
        match result {
            Ok(tasks) => {
                let n = tasks.len();
                for t in tasks {
                    next.insert(t);
                }
                statuses.push(BackendStatus {
                    name: b.name.clone(),
                    url: dwa_core::redact::redact(&b.base),
                    ok: true,
                    tasks: n,
                    error: None,
                    saturated_until: None,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "backend catalog unavailable; keeping its last known tasks");
                for t in old.all().into_iter().filter(|t| t.backend == b.name) {
                    next.insert(t);
                }
                statuses.push(BackendStatus {
                    name: b.name.clone(),
                    url: dwa_core::redact::redact(&b.base),
                    ok: false,
                    tasks: next.count_for(&b.name),
                    error: Some(e.to_string()),
                    saturated_until: None,
                });
            }
        }
    }
    engine.set_catalog(next);
    statuses
}
