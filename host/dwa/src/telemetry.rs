//! The process's logs and traces (docs/operations.md, "Traces"): log lines
//! on standard error filtered by `RUST_LOG`, and, when an OTLP endpoint is
//! configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), the engine's spans (target
//! `dwa_otel`, see `dwa_engine::traces`) exported over OTLP/HTTP in batches.
//! The exporter reads the standard `OTEL_*` variables itself (protocol,
//! headers, timeout, batch delay, service name).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, Response};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The target of the spans that make traces (`dwa_engine::traces`).
pub const SPAN_TARGET: &str = "dwa_otel";

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter refused its settings (an `OTEL_*` variable).
    #[error("OTLP trace exporter: {0}")]
    Exporter(String),
    /// A subscriber was installed already.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// What must be flushed before the process exits.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered (bounded by the exporter's timeout).
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "traces not all exported at shutdown");
        }
    }
}

/// Whether the environment names an OTLP endpoint (and does not disable the SDK).
fn otlp_configured() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the log subscriber (`RUST_LOG`, else `default_level`) and, when
/// an OTLP endpoint is configured, the trace exporter. Call it inside the
/// tokio runtime: the exporter sends on it.
pub fn init(default_level: &str) -> Result<Telemetry, TelemetryError> {
    let logs = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_level))
        // Trace spans are for the exporter, not for log lines.
        .add_directive(
            format!("{SPAN_TARGET}=off")
                .parse()
                .map_err(|e| TelemetryError::Install(format!("{e}")))?,
        );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(logs);
    let provider = if otlp_configured() {
        Some(provider()?)
    } else {
        None
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("dwa"))
            .with_filter(Targets::new().with_target(SPAN_TARGET, tracing::Level::INFO))
    });
    Registry::default()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::Install(e.to_string()))?;
    Ok(Telemetry { provider })
}

fn provider() -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    let client = OtlpClient {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?,
        runtime: tokio::runtime::Handle::try_current()
            .map_err(|e| TelemetryError::Exporter(format!("no runtime to send on: {e}")))?,
    };
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client);
    // The specification's default is protobuf; the exporter's own is JSON
    // when, as here, it is built able to send both.
    let chosen = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some());
    if !chosen {
        builder = builder.with_protocol(Protocol::HttpBinary);
    }
    let exporter = builder
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("dwa");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The exporter's HTTP client: the host's reqwest, sending on the tokio
/// runtime (the SDK's batch processor exports from a thread of its own,
/// where reqwest's async client alone would find no reactor).
#[derive(Debug)]
struct OtlpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let resp = client.execute(request).await?;
            let mut answer = Response::builder().status(resp.status());
            if let Some(h) = answer.headers_mut() {
                *h = resp.headers().clone();
            }
            let body = resp.bytes().await?;
            Ok::<_, HttpError>(answer.body(body)?)
        });
        sent.await?
    }
}
