//! `GET /metrics` (docs/api.md, "Metrics"): what the engine counts, in
//! Prometheus text format, rendered by metrics-exporter-prometheus from the
//! recorder [`install`] puts in place at start. With `DWA_API_TOKEN` set,
//! the scraper sends it as a bearer token, as API clients do. Queue depths
//! are read from the store at each scrape.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::{ApiError, AppState, authorized};

/// Bucket bounds (seconds) of the duration histograms: a no-op step is
/// ~100 µs, a GPU task minutes.
const BUCKETS: [f64; 14] = [
    0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0,
];

/// The most queues whose depth a scrape shows (the deepest): queue names
/// come from requests, and a series per name would grow without bound.
pub const MAX_QUEUE_SERIES: usize = 100;

/// How long a scrape waits for the store's queue depths before answering
/// without fresh ones (the store's own trouble is on `/health`).
const DEPTH_WAIT: Duration = Duration::from_secs(2);

/// Renders the recorder's metrics, with the store's queue depths.
pub struct Scraper {
    handle: PrometheusHandle,
    /// The queues the last scrape showed: one gone since is shown as 0, not
    /// left at its last depth.
    shown: Mutex<BTreeSet<String>>,
}

/// Installs the process's recorder and describes the engine's metrics;
/// `None` (logged) if one is installed already.
pub fn install() -> Option<Arc<Scraper>> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .map_err(|e| tracing::warn!(error = %e, "metrics buckets refused"))
        .ok()?;
    let handle = match builder.install_recorder() {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed: /metrics answers 503");
            return None;
        }
    };
    for (name, help) in dwa_engine::meters::DESCRIPTIONS {
        metrics::describe_counter!(name, help);
    }
    for (name, help) in QUEUE_DESCRIPTIONS {
        metrics::describe_gauge!(name, help);
    }
    // Histograms keep samples until an upkeep folds them into buckets.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Some(Arc::new(Scraper {
        handle,
        shown: Mutex::new(BTreeSet::new()),
    }))
}

const QUEUE_DESCRIPTIONS: [(&str, &str); 3] = [
    (
        "dwa_queue_waiting_jobs",
        "Jobs due that no worker holds yet, by queue (from the store: all hosts)",
    ),
    (
        "dwa_queue_delayed_jobs",
        "Jobs due later (runAt, retry backoff, waits, sub-tasks), by queue",
    ),
    (
        "dwa_queue_oldest_waiting_seconds",
        "How long the job at the head of the queue has waited, by queue",
    ),
];

impl Scraper {
    /// Sets the queue gauges from the store's depths now.
    async fn read_depths(&self, store: &dyn dwa_store::Store) {
        let depths =
            match tokio::time::timeout(DEPTH_WAIT, store.queue_depths(MAX_QUEUE_SERIES)).await {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "queue depths not read for /metrics");
                    return;
                }
                Err(_) => {
                    tracing::warn!("queue depths not read for /metrics within 2 s");
                    return;
                }
            };
        let now = store.now_ms();
        let mut shown = BTreeSet::new();
        for d in depths {
            let age = d
                .head_since
                .map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
            let q = d.queue.clone();
            metrics::gauge!("dwa_queue_waiting_jobs", "queue" => q.clone()).set(d.waiting as f64);
            metrics::gauge!("dwa_queue_delayed_jobs", "queue" => q.clone()).set(d.delayed as f64);
            metrics::gauge!("dwa_queue_oldest_waiting_seconds", "queue" => q).set(age);
            shown.insert(d.queue);
        }
        let Ok(mut before) = self.shown.lock() else {
            return;
        };
        for gone in before.difference(&shown) {
            for (name, _) in QUEUE_DESCRIPTIONS {
                metrics::gauge!(name, "queue" => gone.clone()).set(0.0);
            }
        }
        // A queue shown as 0 once is not carried further: its series stays at 0.
        *before = shown;
    }
}

/// Renders the metrics.
pub(super) async fn scrape(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&st, &headers) {
        return ApiError::Unauthorized.into_response();
    }
    match &st.metrics {
        Some(s) => {
            s.read_depths(st.engine.store().as_ref()).await;
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                s.handle.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics recorder in this process\n",
        )
            .into_response(),
    }
}
