//! Settings from the environment (docs/configuration.md), read once at start.

use std::path::PathBuf;
use std::str::FromStr;

/// A variable that is set but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Everything `dwa serve` reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DWA_HOST`: the address to listen on.
    pub host: String,
    /// `PORT`: 0 picks a free port (printed at start).
    pub port: u16,
    /// `DWA_DATA_DIR`: where the embedded store lives.
    pub data_dir: PathBuf,
    /// `REDIS_URL`: use Redis instead of the embedded store.
    pub redis_url: Option<String>,
    /// `MODAL_URL`.
    pub modal_url: Option<String>,
    /// `MODAL_TOKEN`: bearer token for Modal.
    pub modal_token: Option<String>,
    /// `RAY_URL`.
    pub ray_url: Option<String>,
    /// `RAY_TOKEN`: bearer token for Ray Serve, where set.
    pub ray_token: Option<String>,
    /// `LOCAL_BACKEND_URL`.
    pub local_url: Option<String>,
    /// `WORKER_CONCURRENCY`: workers on the default queue (and named queues).
    pub worker_concurrency: usize,
    /// `GPU_WORKER_CONCURRENCY`: workers on the gpu queue.
    pub gpu_worker_concurrency: usize,
    /// `DWA_API_TOKEN`: bearer token every `/api/*` call needs.
    pub api_token: Option<String>,
    /// `DWA_MAX_BODY_BYTES`: largest request body.
    pub max_body_bytes: usize,
    /// `DWA_LEASE_MS`: how long a job stays leased without renewal.
    pub lease_ms: i64,
    /// `DWA_SHUTDOWN_GRACE_MS`: how long running steps may finish after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// `DWA_TASK_CATALOG`: the catalog generated from the Python tasks (`just gen-types`), whose schemas fill in for a backend that announces none.
    pub task_catalog: PathBuf,
    /// `DWA_CATALOG_REFRESH_SECS`: how often backend catalogs are re-read (0: never).
    pub catalog_refresh_secs: u64,
    /// `DWA_PLUGIN_DIR`: where plugins (`.wasm` + manifest) are loaded from.
    pub plugin_dir: PathBuf,
    /// `DWA_PLUGIN_CACHE_DIR`: where compiled plugins are cached (default: `<DWA_DATA_DIR>/plugin-cache`).
    pub plugin_cache_dir: PathBuf,
    /// `DWA_PROGRESS_THROTTLE_MS`: at most one `onProgress` firing per task in this window.
    pub progress_throttle_ms: u64,
    /// `DWA_WORK_DIR`: where each task's working folder is made (default: `<DWA_DATA_DIR>/work`).
    pub work_dir: PathBuf,
    /// `DWA_PLUGIN_WATCH_MS`: how often the plugin folder is checked for changes (0: never).
    pub plugin_watch_ms: u64,
    /// `DWA_HTTP_ALLOW`: hosts/IPs/CIDRs plugin HTTP may reach although private.
    pub http_allow: String,
    /// `DWA_PLUGIN_POLICY`: a JSON file of the operator's grants per plugin.
    pub plugin_policy: Option<PathBuf>,
    /// `DWA_REDIS_PREFIX`: the prefix of every Redis key (several deployments can share a Redis).
    pub redis_prefix: String,
    /// `DWA_MAX_STALLED`: expired leases a job may have before its step fails.
    pub max_stalled: u32,
    /// `DWA_RETENTION_HOURS`: how long finished tasks are kept (both stores).
    pub retention_hours: u64,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse<T: FromStr>(
    name: &'static str,
    default: T,
    check: fn(&T) -> bool,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => {
            let parsed = v.trim().parse::<T>().map_err(|e| ConfigError {
                name,
                value: v.clone(),
                reason: e.to_string(),
            })?;
            if check(&parsed) {
                Ok(parsed)
            } else {
                Err(ConfigError {
                    name,
                    value: v,
                    reason: "out of range".into(),
                })
            }
        }
    }
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            host: var("DWA_HOST").unwrap_or_else(|| "0.0.0.0".into()),
            port: parse("PORT", 3000u16, |_| true)?,
            data_dir: var("DWA_DATA_DIR").map_or_else(|| PathBuf::from("./data"), PathBuf::from),
            redis_url: var("REDIS_URL"),
            modal_url: var("MODAL_URL"),
            modal_token: var("MODAL_TOKEN"),
            ray_url: var("RAY_URL"),
            ray_token: var("RAY_TOKEN"),
            local_url: var("LOCAL_BACKEND_URL"),
            worker_concurrency: parse("WORKER_CONCURRENCY", 5usize, |n| (1..=10_000).contains(n))?,
            gpu_worker_concurrency: parse("GPU_WORKER_CONCURRENCY", 2usize, |n| {
                (1..=10_000).contains(n)
            })?,
            api_token: var("DWA_API_TOKEN"),
            max_body_bytes: parse("DWA_MAX_BODY_BYTES", 16 * 1024 * 1024usize, |n| *n >= 1024)?,
            lease_ms: parse("DWA_LEASE_MS", 30_000i64, |n| (100..=3_600_000).contains(n))?,
            shutdown_grace_ms: parse("DWA_SHUTDOWN_GRACE_MS", 10_000u64, |_| true)?,
            task_catalog: var("DWA_TASK_CATALOG")
                .map_or_else(|| PathBuf::from("shared/catalog.json"), PathBuf::from),
            catalog_refresh_secs: parse("DWA_CATALOG_REFRESH_SECS", 60u64, |_| true)?,
            plugin_dir: var("DWA_PLUGIN_DIR")
                .map_or_else(|| PathBuf::from("plugins/dist"), PathBuf::from),
            plugin_cache_dir: var("DWA_PLUGIN_CACHE_DIR").map_or_else(
                || {
                    var("DWA_DATA_DIR")
                        .map_or_else(|| PathBuf::from("./data"), PathBuf::from)
                        .join("plugin-cache")
                },
                PathBuf::from,
            ),
            work_dir: var("DWA_WORK_DIR").map_or_else(
                || {
                    var("DWA_DATA_DIR")
                        .map_or_else(|| PathBuf::from("./data"), PathBuf::from)
                        .join("work")
                },
                PathBuf::from,
            ),
            plugin_watch_ms: parse("DWA_PLUGIN_WATCH_MS", 2000u64, |_| true)?,
            http_allow: var("DWA_HTTP_ALLOW").unwrap_or_default(),
            plugin_policy: var("DWA_PLUGIN_POLICY").map(PathBuf::from),
            redis_prefix: var("DWA_REDIS_PREFIX").unwrap_or_else(|| "dwa".into()),
            max_stalled: parse("DWA_MAX_STALLED", 3u32, |n| (1..=1000).contains(n))?,
            retention_hours: parse("DWA_RETENTION_HOURS", 168u64, |n| *n >= 1)?,
            progress_throttle_ms: parse("DWA_PROGRESS_THROTTLE_MS", 250u64, |n| *n <= 3_600_000)?,
        })
    }
}
