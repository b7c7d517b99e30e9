//! Wires the parts together from a [`Config`]: store, backends, catalog,
//! engine and router. The binary and the benchmarks start the host through here.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::api::{AppState, router};
use crate::config::Config;
use dwa_core::catalog::Catalog;
use dwa_engine::backend::HttpBackend;
use dwa_engine::engine::{Engine, EngineConfig};
use dwa_engine::executor::Executor;
use dwa_engine::signals::Signals;
use dwa_plugins::{PluginConfig, Plugins, WORKDIR_MARKER};
use dwa_store::Store;
use dwa_store::redis::{RedisOptions, RedisStore};
use dwa_store::sqlite::SqliteStore;

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] dwa_store::StoreError),
    /// A backend client could not be built.
    #[error("cannot set up backend {name}: {message}")]
    Backend {
        /// The backend.
        name: String,
        /// What failed.
        message: String,
    },
    /// A setting cannot be honoured.
    #[error("{0}")]
    Unsupported(String),
    /// `DWA_TASK_CATALOG` names a catalog that cannot be used.
    #[error(transparent)]
    Catalog(#[from] dwa_core::catalog::GeneratedCatalogError),
    /// The plugin host could not start.
    #[error(transparent)]
    Plugins(#[from] dwa_plugins::PluginSetupError),
}

/// A host ready to serve.
pub struct Host {
    /// The engine, already started.
    pub engine: Arc<Engine>,
    /// The API's state.
    pub state: AppState,
    /// The router to serve.
    pub router: axum::Router,
    /// The Redis store, when the host runs on one (benchmarks read its counters).
    pub redis: Option<Arc<RedisStore>>,
}

/// Removes the working folders of tasks the store no longer has (purged by
/// retention), so that files do not outlive their tasks. Only folders dwa
/// made (a real folder holding [`WORKDIR_MARKER`]) are touched: anything
/// else the operator keeps in `DWA_WORK_DIR` stays.
pub async fn sweep_work_dirs(store: &dyn Store, work_dir: &std::path::Path) -> usize {
    let Ok(mut entries) = tokio::fs::read_dir(work_dir).await else {
        return 0;
    };
    let mut removed = 0;
    while let Ok(Some(e)) = entries.next_entry().await {
        let Some(id) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let ours = tokio::fs::symlink_metadata(e.path())
            .await
            .is_ok_and(|m| m.is_dir())
            && tokio::fs::symlink_metadata(e.path().join(WORKDIR_MARKER))
                .await
                .is_ok_and(|m| m.is_file());
        if !ours {
            continue;
        }
        // Only a definite "no such task" removes anything; a store error keeps the folder.
        if matches!(store.task_summary(&id).await, Ok(None)) {
            match tokio::fs::remove_dir_all(e.path()).await {
                Ok(()) => removed += 1,
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "cannot remove a purged task's working folder")
                }
            }
        }
    }
    if removed > 0 {
        tracing::info!(folders = removed, "removed working folders of purged tasks");
    }
    removed
}

/// Starts a host, in phases: install the metrics recorder, open the store, start retention, set up the
/// backends, load the plugins, build the catalog, start the engine, keep
/// the catalog fresh, and put the API in front.
pub async fn build(config: &Config) -> Result<Host, StartError> {
    // First: what the engine records from its start (its pools) is kept.
    let metrics = crate::api::metrics::install();
    let (store, redis) = open_store(config).await?;
    // This host's name in leases and backend requests.
    let owner = std::env::var("DWA_HOST_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("dwa-{}", uuid::Uuid::now_v7()));
    spawn_retention(store.clone(), config);
    let backends = backends(config, &owner)?;
    let plugins = load_plugins(config).await?;
    let catalog = catalog(config, &plugins, &backends)?;
    let engine = Engine::new(
        store,
        catalog,
        Executor::new(backends).with_plugins(plugins.clone()),
        EngineConfig {
            limits: config.limits.clone(),
            lease_ms: config.lease_ms,
            owner,
            progress_throttle: Duration::from_millis(config.progress_throttle_ms),
            idempotency_ttl_ms: (config.idempotency_ttl_secs * 1000) as i64,
            // Tests only: a host that "dies" before delivering its effects.
            hold_effects: std::env::var("DWA_TEST_HOLD_EFFECTS").is_ok_and(|v| v == "1"),
            signals: match &config.signal_secret {
                Some(secret) => Signals::new(secret.as_bytes(), config.public_url.as_deref()),
                None => {
                    tracing::warn!(
                        "DWA_SIGNAL_SECRET is not set: links of builtin.wait steps are good on this host until it stops"
                    );
                    Signals::random(config.public_url.as_deref())
                }
            },
        },
        Some(plugins.clone()),
    );
    if config.plugin_watch_ms > 0 {
        let weak = Arc::downgrade(&engine);
        plugins.watch(
            config.plugin_dir.clone(),
            Duration::from_millis(config.plugin_watch_ms),
            move || {
                if let Some(engine) = weak.upgrade() {
                    engine.refresh_plugins();
                }
            },
        );
    }
    let statuses = dwa_engine::discovery::refresh(&engine).await;
    engine.start().await?;
    let state = AppState {
        engine: engine.clone(),
        api_token: config.api_token.as_deref().map(Arc::from),
        backends: Arc::new(RwLock::new(statuses)),
        sse_linger: Duration::from_secs(5),
        followers: crate::followers::Followers::new(
            config.max_followers_per_task,
            config.max_followers,
        ),
        metrics,
    };
    spawn_catalog_refresh(&state, config.catalog_refresh_secs);
    let router = router(state.clone(), config.max_body_bytes);
    Ok(Host {
        engine,
        state,
        router,
        redis,
    })
}

/// Redis when `REDIS_URL` is set, else the embedded store in `DWA_DATA_DIR`.
async fn open_store(
    config: &Config,
) -> Result<(Arc<dyn Store>, Option<Arc<RedisStore>>), StartError> {
    let Some(url) = &config.redis_url else {
        return Ok((Arc::new(SqliteStore::open(&config.data_dir)?), None));
    };
    let redis = Arc::new(
        RedisStore::connect(&RedisOptions {
            url: url.clone(),
            prefix: config.redis_prefix.clone(),
            max_stalled: config.max_stalled,
        })
        .await?,
    );
    Ok((redis.clone(), Some(redis)))
}

/// Retention: every host purges finished tasks past `DWA_RETENTION_HOURS`
/// and then their working folders (concurrent purges on Redis are
/// harmless: each is one script).
fn spawn_retention(store: Arc<dyn Store>, config: &Config) {
    let retention_ms = (config.retention_hours * 3600 * 1000) as i64;
    let work_dir = config.work_dir.clone();
    tokio::spawn(async move {
        loop {
            let before = dwa_core::model::now_ms() - retention_ms;
            match store.purge_finished(before, 500).await {
                Ok(n) if n > 0 => tracing::info!(tasks = n, "purged finished tasks past retention"),
                Ok(_) => {
                    sweep_work_dirs(&*store, &work_dir).await;
                    tokio::time::sleep(Duration::from_secs(60)).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention purge failed");
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            }
        }
    });
}

/// A client for each backend whose URL is set.
fn backends(config: &Config, owner: &str) -> Result<Vec<Arc<HttpBackend>>, StartError> {
    let mut backends = Vec::new();
    for (name, url, token) in [
        ("modal", &config.modal_url, &config.modal_token),
        ("ray", &config.ray_url, &config.ray_token),
        ("local", &config.local_url, &None),
    ] {
        if let Some(url) = url {
            let b = HttpBackend::new(name, url, token.clone())
                .map_err(|e| StartError::Backend {
                    name: name.into(),
                    message: e.to_string(),
                })?
                .with_host_name(owner)
                .with_max_body(config.limits.max_result_bytes);
            backends.push(Arc::new(b));
        }
    }
    Ok(backends)
}

/// The plugin host, with every plugin in `DWA_PLUGIN_DIR` loaded (compiling
/// is CPU work: off the async workers). A plugin that cannot load is
/// logged and left out; the host starts without it.
async fn load_plugins(config: &Config) -> Result<Arc<Plugins>, StartError> {
    // Cached plugins are mapped at their first call: an idle host holds
    // only what it uses (docs/plugins.md, "Loading").
    let mut plugins = Plugins::new(&PluginConfig {
        dir: config.plugin_dir.clone(),
        cache_dir: Some(config.plugin_cache_dir.clone()),
        http_allow: config.http_allow.clone(),
        policy_file: config.plugin_policy.clone(),
        work_dir: config.work_dir.clone(),
    })?
    .lazily();
    // Components missing from the cache are compiled by `dwa
    // __compile-plugin` children: a compile's memory (hundreds of MB for a
    // Python component) leaves with them. Only from the dwa binary itself
    // (a benchmark or test that builds a host in-process compiles here).
    if let Ok(exe) = std::env::current_exe()
        && exe.file_stem().is_some_and(|n| n == "dwa")
    {
        plugins = plugins.with_compiler(vec![exe.into_os_string(), "__compile-plugin".into()]);
    }
    let plugins = Arc::new(plugins);
    let report = {
        let p = plugins.clone();
        let dir = config.plugin_dir.clone();
        tokio::task::spawn_blocking(move || p.load_dir(&dir))
            .await
            .map_err(|e| StartError::Unsupported(format!("plugin loading failed: {e}")))?
    };
    for e in &report.errors {
        tracing::error!("{e}");
    }
    if report.loaded.is_empty() {
        tracing::warn!(dir = %config.plugin_dir.display(), "no plugins loaded: effects are unavailable (run `just build-plugins`)");
    } else {
        tracing::info!(plugins = ?report.loaded, "plugins loaded");
    }
    Ok(plugins)
}

/// The builtins, what the plugins provide, the generated catalog's schemas
/// and the configured backends (their tasks come with discovery).
fn catalog(
    config: &Config,
    plugins: &Plugins,
    backends: &[Arc<HttpBackend>],
) -> Result<Catalog, StartError> {
    let mut catalog = Catalog::with_builtins();
    catalog.set_plugins(plugins.provides());
    // An explicit DWA_TASK_CATALOG must load; the default path may be absent
    // (a host run outside the repository).
    match Catalog::load_generated(&config.task_catalog) {
        Ok(g) => {
            tracing::info!(tasks = g.len(), path = %config.task_catalog.display(), "generated task catalog loaded");
            catalog.set_generated(Arc::new(g));
        }
        Err(e) if std::env::var_os("DWA_TASK_CATALOG").is_some() => {
            return Err(StartError::Catalog(e));
        }
        Err(e) => tracing::debug!("{e}"),
    }
    for b in backends {
        catalog.add_backend(&b.name);
    }
    Ok(catalog)
}

/// Re-reads the backends' catalogs every `secs` (0: never).
fn spawn_catalog_refresh(state: &AppState, secs: u64) {
    if secs == 0 {
        return;
    }
    let st = state.clone();
    let every = Duration::from_secs(secs);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let statuses = dwa_engine::discovery::refresh(&st.engine).await;
            if let Ok(mut b) = st.backends.write() {
                *b = statuses;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sweep_removes_only_folders_dwa_made_for_tasks_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("data")).unwrap();
        let t = dwa_store::conformance::chain_task(1);
        let id = t.id.clone();
        store.create_task(t).await.unwrap();
        let work = dir.path().join("work");
        for name in [id.as_str(), "01a2-purged-long-ago"] {
            dwa_plugins::make_workdir(&work.join(name)).await.unwrap();
            std::fs::write(work.join(name).join("out.png"), b"x").unwrap();
        }
        // The operator's own folder, named like a task but not made by dwa.
        std::fs::create_dir_all(work.join("01a2-operators")).unwrap();
        std::fs::write(work.join("01a2-operators").join("keep.txt"), b"x").unwrap();
        // A link to a marked folder elsewhere is not followed.
        let elsewhere = dir.path().join("elsewhere");
        dwa_plugins::make_workdir(&elsewhere).await.unwrap();
        std::os::unix::fs::symlink(&elsewhere, work.join("01a2-link")).unwrap();
        assert_eq!(sweep_work_dirs(&store, &work).await, 1);
        assert!(work.join(&id).join("out.png").exists());
        assert!(!work.join("01a2-purged-long-ago").exists());
        assert!(work.join("01a2-operators").join("keep.txt").exists());
        assert!(elsewhere.join(dwa_plugins::WORKDIR_MARKER).exists());
        // No folder at all is not an error.
        assert_eq!(sweep_work_dirs(&store, &dir.path().join("none")).await, 0);
    }
}
