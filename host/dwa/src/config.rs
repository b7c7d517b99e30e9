//! Settings from the environment (docs/configuration.md), read once at start.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;

use dwa_core::limits::Limits;

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

/// `DWA_SIGNAL_SECRET`: the key that signs the links of `builtin.wait`
/// steps, shared by the hosts of a Redis deployment; at least 16
/// characters (its value is never shown in an error).
fn signal_secret() -> Result<Option<String>, ConfigError> {
    match var("DWA_SIGNAL_SECRET") {
        Some(s) if s.len() < 16 => Err(ConfigError {
            name: "DWA_SIGNAL_SECRET",
            value: format!("({} characters, hidden)", s.len()),
            reason: "must be at least 16 characters".into(),
        }),
        other => Ok(other),
    }
}

/// `DWA_PUBLIC_URL`: where clients reach this host, for the absolute links
/// of `builtin.wait` steps (without it, links are paths).
fn public_url() -> Result<Option<String>, ConfigError> {
    match var("DWA_PUBLIC_URL") {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => Err(ConfigError {
            name: "DWA_PUBLIC_URL",
            value: u,
            reason: "must be an http:// or https:// URL".into(),
        }),
        other => Ok(other),
    }
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
    /// `DWA_IDEMPOTENCY_TTL_SECS`: how long an idempotency key answers its first task.
    pub idempotency_ttl_secs: u64,
    /// `DWA_MAX_FOLLOWERS_PER_TASK`: event-stream clients of one task.
    pub max_followers_per_task: usize,
    /// `DWA_MAX_FOLLOWERS`: event-stream clients on this host.
    pub max_followers: usize,
    /// `DWA_SIGNAL_SECRET`: signs wait steps' links (unset: a key of this process only).
    pub signal_secret: Option<String>,
    /// `DWA_PUBLIC_URL`: the base of wait steps' links (unset: links are paths).
    pub public_url: Option<String>,
    /// The limits requests run within (`DWA_MAX_*`) and the queues tasks may
    /// name with their workers (`WORKER_CONCURRENCY`, `GPU_WORKER_CONCURRENCY`,
    /// `DWA_QUEUES`).
    pub limits: Limits,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Reads `name` as a `T` within `range`; an unset variable is `default`.
/// A value outside the range is a start-up error, never a silent wrap.
fn parse<T>(name: &'static str, default: T, range: RangeInclusive<T>) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + std::fmt::Display,
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
            if range.contains(&parsed) {
                Ok(parsed)
            } else {
                Err(ConfigError {
                    name,
                    value: v,
                    reason: format!("must be between {} and {}", range.start(), range.end()),
                })
            }
        }
    }
}

/// Most workers one queue may have on one host.
const MAX_WORKERS: usize = 10_000;

/// `DWA_QUEUES=video:2,fast:8`: queues beyond `default` and `gpu`, each with
/// its workers per host (`WORKER_CONCURRENCY` when a name has no count).
fn queues(
    default_workers: usize,
    gpu_workers: usize,
) -> Result<BTreeMap<String, usize>, ConfigError> {
    let mut queues = BTreeMap::from([
        ("default".to_owned(), default_workers),
        ("gpu".to_owned(), gpu_workers),
    ]);
    let Some(value) = var("DWA_QUEUES") else {
        return Ok(queues);
    };
    let bad = |reason: String| ConfigError {
        name: "DWA_QUEUES",
        value: value.clone(),
        reason,
    };
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, workers) = match entry.split_once(':') {
            Some((n, w)) => {
                let w = w
                    .trim()
                    .parse::<usize>()
                    .map_err(|e| bad(format!("{entry:?}: {e}")))?;
                (n.trim(), w)
            }
            None => (entry, default_workers),
        };
        if !dwa_core::plan::is_valid_queue(name) {
            return Err(bad(format!(
                "{name:?} is not a queue name (1-64 letters, digits, '-', '_' or '.')"
            )));
        }
        if name == "default" || name == "gpu" {
            return Err(bad(format!(
                "{name:?} is always there: set its workers with WORKER_CONCURRENCY or GPU_WORKER_CONCURRENCY"
            )));
        }
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(bad(format!(
                "{name:?}: workers must be between 1 and {MAX_WORKERS}"
            )));
        }
        if queues.insert(name.to_owned(), workers).is_some() {
            return Err(bad(format!("{name:?} is listed twice")));
        }
    }
    Ok(queues)
}

/// The `DWA_MAX_*` limits; each must be at least 1, and none may be so
/// large that the limit means nothing (docs/configuration.md, "Limits").
fn limits(queues: BTreeMap<String, usize>) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    Ok(Limits {
        // Planning keeps steps²/8 bytes of reachability: 12.5 MB at 10,000.
        max_steps: parse("DWA_MAX_STEPS", d.max_steps, 1..=10_000)?,
        max_items_per_step: parse("DWA_MAX_FOREACH_ITEMS", d.max_items_per_step, 1..=1_000_000)?,
        max_items_per_task: parse("DWA_MAX_TASK_ITEMS", d.max_items_per_task, 1..=10_000_000)?,
        // serde_json refuses JSON nested past 128 levels before we see it.
        max_json_depth: parse("DWA_MAX_JSON_DEPTH", d.max_json_depth, 1..=128)?,
        max_input_bytes: parse("DWA_MAX_INPUT_BYTES", d.max_input_bytes, 1..=1 << 30)?,
        max_result_bytes: parse("DWA_MAX_RESULT_BYTES", d.max_result_bytes, 1..=1 << 30)?,
        max_task_events: parse("DWA_MAX_TASK_EVENTS", d.max_task_events, 10..=10_000_000)?,
        max_lineage_depth: parse("DWA_MAX_LINEAGE_DEPTH", d.max_lineage_depth, 0..=1000)?,
        max_enqueues_per_task: parse(
            "DWA_MAX_ENQUEUES_PER_TASK",
            d.max_enqueues_per_task,
            0..=100_000,
        )?,
        max_schedules: parse("DWA_MAX_SCHEDULES", d.max_schedules, 0..=1_000_000)?,
        queues,
    })
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        let worker_concurrency = parse("WORKER_CONCURRENCY", 5usize, 1..=MAX_WORKERS)?;
        let gpu_worker_concurrency = parse("GPU_WORKER_CONCURRENCY", 2usize, 1..=MAX_WORKERS)?;
        let limits = limits(queues(worker_concurrency, gpu_worker_concurrency)?)?;
        Ok(Config {
            limits,
            idempotency_ttl_secs: parse("DWA_IDEMPOTENCY_TTL_SECS", 86_400u64, 1..=2_592_000)?,
            max_followers_per_task: parse("DWA_MAX_FOLLOWERS_PER_TASK", 100usize, 1..=100_000)?,
            max_followers: parse("DWA_MAX_FOLLOWERS", 10_000usize, 1..=1_000_000)?,
            signal_secret: signal_secret()?,
            public_url: public_url()?,
            host: var("DWA_HOST").unwrap_or_else(|| "0.0.0.0".into()),
            port: parse("PORT", 3000u16, 0..=u16::MAX)?,
            data_dir: var("DWA_DATA_DIR").map_or_else(|| PathBuf::from("./data"), PathBuf::from),
            redis_url: var("REDIS_URL"),
            modal_url: var("MODAL_URL"),
            modal_token: var("MODAL_TOKEN"),
            ray_url: var("RAY_URL"),
            ray_token: var("RAY_TOKEN"),
            local_url: var("LOCAL_BACKEND_URL"),
            api_token: var("DWA_API_TOKEN"),
            max_body_bytes: parse("DWA_MAX_BODY_BYTES", 16 * 1024 * 1024usize, 1024..=1 << 30)?,
            lease_ms: parse("DWA_LEASE_MS", 30_000i64, 100..=3_600_000)?,
            shutdown_grace_ms: parse("DWA_SHUTDOWN_GRACE_MS", 10_000u64, 0..=3_600_000)?,
            task_catalog: var("DWA_TASK_CATALOG")
                .map_or_else(|| PathBuf::from("shared/catalog.json"), PathBuf::from),
            catalog_refresh_secs: parse("DWA_CATALOG_REFRESH_SECS", 60u64, 0..=86_400)?,
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
            plugin_watch_ms: parse("DWA_PLUGIN_WATCH_MS", 2000u64, 0..=3_600_000)?,
            http_allow: var("DWA_HTTP_ALLOW").unwrap_or_default(),
            plugin_policy: var("DWA_PLUGIN_POLICY").map(PathBuf::from),
            redis_prefix: var("DWA_REDIS_PREFIX").unwrap_or_else(|| "dwa".into()),
            max_stalled: parse("DWA_MAX_STALLED", 3u32, 1..=1000)?,
            retention_hours: parse("DWA_RETENTION_HOURS", 168u64, 1..=87_600)?,
            progress_throttle_ms: parse("DWA_PROGRESS_THROTTLE_MS", 250u64, 0..=3_600_000)?,
        })
    }
}
