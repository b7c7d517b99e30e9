//! `GET /metrics` (docs/api.md, "Metrics"): what the engine counts, in
//! Prometheus text format, rendered by metrics-exporter-prometheus from the
//! recorder [`install`] puts in place at start. With `DWA_API_TOKEN` set,
//! the scraper sends it as a bearer token, as API clients do.

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

/// Installs the process's recorder and describes the engine's metrics;
/// `None` (logged) if one is installed already.
pub fn install() -> Option<PrometheusHandle> {
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
    // Histograms keep samples until an upkeep folds them into buckets.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Some(handle)
}

/// Renders the metrics.
pub(super) async fn scrape(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&st, &headers) {
        return ApiError::Unauthorized.into_response();
    }
    match &st.metrics {
        Some(h) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics recorder in this process\n",
        )
            .into_response(),
    }
}
