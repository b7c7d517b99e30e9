//! The WebAssembly plugin host: loads components and their manifests from
//! `DWA_PLUGIN_DIR`, compiles each once (precompiled artifacts cached by the
//! wasm's hash and the engine's compatibility hash), pre-instantiates them,
//! grants each the intersection of what its manifest asks and what the
//! operator allows, and runs every call in a fresh, bounded instance.
//!
//! - [`manifest`]: the manifest format and the world-version check.
//! - [`outbound`]: outbound HTTP behind capability and address checks.
//! - [`runtime`]: wasmtime engine, host interface, limits, one call.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::Semaphore;
use utoipa::ToSchema;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

pub mod manifest;
pub mod outbound;
pub mod runtime;

use manifest::Manifest;
use outbound::{NetPolicy, Outbound};
use runtime::{CallError, CallSpec, CallState, EffectCall, EffectHandlerPre, PluginHost};

/// How the plugin host is set up.
#[derive(Debug, Clone, Default)]
pub struct PluginConfig {
    /// `DWA_PLUGIN_DIR`: where `.wasm` files and their manifests are.
    pub dir: PathBuf,
    /// Where precompiled artifacts are cached (None: no cache).
    pub cache_dir: Option<PathBuf>,
    /// `DWA_HTTP_ALLOW`.
    pub http_allow: String,
    /// `DWA_PLUGIN_POLICY`: the operator's grants file.
    pub policy_file: Option<PathBuf>,
}

/// The operator's grants (`DWA_PLUGIN_POLICY`, JSON): per plugin, and a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorPolicy {
    /// Grants for plugins not listed.
    #[serde(default)]
    pub default: Option<Grants>,
    /// Grants by plugin name.
    #[serde(default)]
    pub plugins: HashMap<String, Grants>,
}

/// What the operator allows one plugin.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Host patterns it may reach over HTTP.
    #[serde(default)]
    pub http: Vec<String>,
}

/// A loaded plugin, as `GET /api/plugins` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginInfo {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// `dwa:plugin/<world>@<version>`.
    pub world: String,
    /// What it does.
    pub description: Option<String>,
    /// Effects it handles.
    pub effects: Vec<String>,
    /// HTTP host patterns its manifest asks for.
    pub asked_http: Vec<String>,
    /// HTTP host patterns granted (asked ∩ operator).
    pub granted_http: Vec<String>,
    /// Memory cap (MiB).
    pub memory_mb: usize,
    /// Time cap per call (ms).
    pub timeout_ms: u64,
    /// Fuel per call, if capped.
    pub fuel: Option<u64>,
    /// SHA-256 of the component.
    pub sha256: String,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
    /// How long loading took (ms).
    pub load_ms: f64,
}

struct Loaded {
    manifest: Manifest,
    pre: EffectHandlerPre<CallState>,
    outbound: Outbound,
    info: PluginInfo,
}

#[derive(Default)]
struct Registry {
    plugins: BTreeMap<String, Arc<Loaded>>,
    effects: HashMap<String, Arc<Loaded>>,
}

/// When a plugin's files last changed: (manifest, component) modification times and sizes.
type Stamp = (
    Option<std::time::SystemTime>,
    u64,
    Option<std::time::SystemTime>,
    u64,
);

fn stamp_of(path: &Path) -> (Option<std::time::SystemTime>, u64) {
    std::fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len()))
}

/// The manifests in `dir` with the stamps of their files.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Stamp> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let (mt, ml) = stamp_of(&p);
        // The component named by the manifest, or `<name>.wasm`.
        let wasm = std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("wasm").and_then(|w| w.as_str()).map(str::to_owned))
            .unwrap_or_else(|| {
                format!(
                    "{}.wasm",
                    p.file_stem().and_then(|s| s.to_str()).unwrap_or("")
                )
            });
        let (wt, wl) = stamp_of(&dir.join(wasm));
        out.insert(p, (mt, ml, wt, wl));
    }
    out
}

/// What a directory load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Plugins loaded.
    pub loaded: Vec<String>,
    /// One line per plugin that could not be loaded.
    pub errors: Vec<String>,
}

/// The plugin host.
pub struct Plugins {
    engine: Engine,
    linker: Linker<CallState>,
    net: Arc<NetPolicy>,
    policy: Option<OperatorPolicy>,
    cache_dir: Option<PathBuf>,
    registry: RwLock<Registry>,
    slots: Semaphore,
    errors: RwLock<Vec<String>>,
}

/// Why the plugin host could not start.
#[derive(Debug, thiserror::Error)]
#[error("plugin host: {0}")]
pub struct PluginSetupError(pub String);

impl Plugins {
    /// Sets up the engine, linker and policies (no plugin loaded yet).
    pub fn new(config: &PluginConfig) -> Result<Plugins, PluginSetupError> {
        let engine = runtime::engine().map_err(PluginSetupError)?;
        let linker = runtime::linker(&engine).map_err(PluginSetupError)?;
        let net = NetPolicy::parse(&config.http_allow).map_err(PluginSetupError)?;
        let policy = match &config.policy_file {
            None => None,
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    PluginSetupError(format!(
                        "cannot read DWA_PLUGIN_POLICY {}: {e}",
                        p.display()
                    ))
                })?;
                Some(serde_json::from_str(&text).map_err(|e| {
                    PluginSetupError(format!("DWA_PLUGIN_POLICY {} is invalid: {e}", p.display()))
                })?)
            }
        };
        Ok(Plugins {
            engine,
            linker,
            net: Arc::new(net),
            policy,
            cache_dir: config.cache_dir.clone(),
            registry: RwLock::new(Registry::default()),
            slots: Semaphore::new(runtime::MAX_INSTANCES as usize),
            errors: RwLock::new(Vec::new()),
        })
    }

    /// Loads every manifest (`*.json`) in `dir`; a broken plugin is reported and skipped.
    pub fn load_dir(&self, dir: &Path) -> LoadReport {
        let mut report = LoadReport::default();
        if !dir.exists() {
            // No plugin folder is a normal state (plugins not built): the
            // caller says so; it is not a load error.
            return report;
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                report
                    .errors
                    .push(format!("cannot read plugin dir {}: {e}", dir.display()));
                return report;
            }
        };
        let mut manifests: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        manifests.sort();
        for path in manifests {
            match self.load(&path) {
                Ok(name) => report.loaded.push(name),
                Err(e) => report.errors.push(e),
            }
        }
        if let Ok(mut errs) = self.errors.write() {
            errs.clone_from(&report.errors);
        }
        report
    }

    /// Loads one plugin from its manifest, replacing a loaded one of the same name.
    pub fn load(&self, manifest_path: &Path) -> Result<String, String> {
        let started = Instant::now();
        let file = manifest_path.display().to_string();
        let text = std::fs::read_to_string(manifest_path)
            .map_err(|e| format!("plugin manifest {file}: cannot read: {e}"))?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| format!("plugin manifest {file}: {e}"))?;
        let world = manifest.validate(&file).map_err(|e| e.to_string())?;
        let wasm_name = manifest
            .wasm
            .clone()
            .unwrap_or_else(|| format!("{}.wasm", manifest.name));
        let wasm_path = manifest_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&wasm_name);
        let who = format!("{}@{}", manifest.name, manifest.version);
        let wasm = std::fs::read(&wasm_path)
            .map_err(|e| format!("plugin {who}: cannot read {}: {e}", wasm_path.display()))?;
        let sha = hex::encode(sha2::Sha256::digest(&wasm));
        let (component, from_cache) = self
            .compile(&wasm, &sha)
            .map_err(|e| format!("plugin {who}: not a valid component: {e}"))?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            format!(
                "plugin {who}: its imports do not match this host's dwa:plugin@{}.{}.{} (rebuild it against wit/): {e:#}",
                manifest::HOST_WIT_VERSION.0,
                manifest::HOST_WIT_VERSION.1,
                manifest::HOST_WIT_VERSION.2
            )
        })?;
        let pre = EffectHandlerPre::new(instance_pre).map_err(|e| {
            format!("plugin {who}: does not export the effect-handler world: {e:#}")
        })?;
        let operator = self.policy.as_ref().map(|p| {
            p.plugins
                .get(&manifest.name)
                .or(p.default.as_ref())
                .map(|g| g.http.clone())
                .unwrap_or_default()
        });
        let outbound = Outbound::new(
            &who,
            manifest.permissions.http.clone(),
            operator,
            self.net.clone(),
        )
        .map_err(|e| format!("plugin {who}: {e}"))?;
        let info = PluginInfo {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            world: format!(
                "dwa:plugin/{}@{}.{}.{}",
                world.world, world.version.0, world.version.1, world.version.2
            ),
            description: manifest.description.clone(),
            effects: manifest.provides.effects.clone(),
            asked_http: manifest.permissions.http.clone(),
            granted_http: outbound.granted(),
            memory_mb: manifest.memory_bytes() >> 20,
            timeout_ms: manifest.timeout().as_millis() as u64,
            fuel: manifest.limits.fuel,
            sha256: sha,
            from_cache,
            load_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        let loaded = Arc::new(Loaded {
            manifest,
            pre,
            outbound,
            info,
        });
        let mut reg = self
            .registry
            .write()
            .map_err(|_| "plugin registry lock poisoned".to_string())?;
        for e in &loaded.manifest.provides.effects {
            if let Some(other) = reg.effects.get(e)
                && other.manifest.name != loaded.manifest.name
            {
                return Err(format!(
                    "plugin {who}: effect {e:?} is already provided by plugin {}",
                    other.manifest.name
                ));
            }
        }
        if let Some(old) = reg.plugins.remove(&loaded.manifest.name) {
            for e in &old.manifest.provides.effects {
                reg.effects.remove(e);
            }
        }
        for e in &loaded.manifest.provides.effects {
            reg.effects.insert(e.clone(), loaded.clone());
        }
        reg.plugins.insert(loaded.manifest.name.clone(), loaded);
        tracing::info!(plugin = %who, from_cache, "plugin loaded");
        Ok(who)
    }

    fn compile(&self, wasm: &[u8], sha: &str) -> Result<(Component, bool), String> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let key = format!("{sha}-{:016x}.cwasm", h.finish());
        if let Some(dir) = &self.cache_dir {
            let path = dir.join(&key);
            if path.exists() {
                // SAFETY: the file is one this host wrote itself (below) for
                // this exact wasm and engine configuration; `deserialize_file`
                // is unsafe only because an untrusted artifact could be forged.
                match unsafe { Component::deserialize_file(&self.engine, &path) } {
                    Ok(c) => return Ok((c, true)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "ignoring a bad cached artifact")
                    }
                }
            }
        }
        let component = Component::new(&self.engine, wasm).map_err(|e| format!("{e:#}"))?;
        if let Some(dir) = &self.cache_dir {
            let write = || -> std::io::Result<()> {
                std::fs::create_dir_all(dir)?;
                let bytes = component
                    .serialize()
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let tmp = dir.join(format!("{key}.tmp-{}", std::process::id()));
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(tmp, dir.join(&key))
            };
            if let Err(e) = write() {
                tracing::warn!(error = %e, "could not cache a compiled plugin");
            }
        }
        Ok((component, false))
    }

    /// Names of the effects loaded plugins provide.
    pub fn effects(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .registry
            .read()
            .map(|r| r.effects.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Unloads a plugin (its manifest was removed); in-flight calls finish.
    pub fn unload(&self, name: &str) -> bool {
        let Ok(mut reg) = self.registry.write() else {
            return false;
        };
        match reg.plugins.remove(name) {
            Some(old) => {
                for e in &old.manifest.provides.effects {
                    reg.effects.remove(e);
                }
                true
            }
            None => false,
        }
    }

    /// Watches `dir` (polling every `every`): a new or rebuilt plugin is
    /// loaded and replaces the old one (calls in flight finish on the old
    /// version); one that fails to load leaves the previous version serving,
    /// and the reason shows in `load_errors`; a removed manifest unloads its
    /// plugin. `changed` is called with the effects provided after a change.
    pub fn watch(
        self: &Arc<Self>,
        dir: PathBuf,
        every: std::time::Duration,
        changed: impl Fn(Vec<String>) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut seen = snapshot(&dir);
            loop {
                tokio::time::sleep(every).await;
                let now = snapshot(&dir);
                if now == seen {
                    continue;
                }
                let me2 = me.clone();
                let (old, new) = (seen.clone(), now.clone());
                let outcome =
                    tokio::task::spawn_blocking(move || me2.apply_changes(&old, &new)).await;
                if let Err(e) = outcome {
                    tracing::error!(error = %e, "plugin reload failed");
                }
                seen = now;
                changed(me.effects());
            }
        })
    }

    fn apply_changes(&self, old: &BTreeMap<PathBuf, Stamp>, new: &BTreeMap<PathBuf, Stamp>) {
        let mut errors = self.load_errors();
        for (path, stamp) in new {
            if old.get(path) == Some(stamp) {
                continue;
            }
            let shown = path.display().to_string();
            errors.retain(|e| !e.contains(&shown));
            match self.load(path) {
                Ok(who) => tracing::info!(plugin = %who, "plugin (re)loaded"),
                Err(e) => {
                    tracing::error!("{e}; the previous version, if any, keeps serving");
                    errors.push(e);
                }
            }
        }
        for path in old.keys().filter(|p| !new.contains_key(*p)) {
            if let Some(name) = path.file_stem().and_then(|s| s.to_str())
                && self.unload(name)
            {
                tracing::info!(plugin = %name, "plugin unloaded: its manifest was removed");
            }
        }
        if let Ok(mut e) = self.errors.write() {
            *e = errors;
        }
    }

    /// Why plugins of the last directory load were refused.
    pub fn load_errors(&self) -> Vec<String> {
        self.errors.read().map(|e| e.clone()).unwrap_or_default()
    }

    /// Every loaded plugin.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.registry
            .read()
            .map(|r| r.plugins.values().map(|p| p.info.clone()).collect())
            .unwrap_or_default()
    }

    /// Runs the plugin that handles `effect`.
    pub async fn call_effect(
        &self,
        effect: &str,
        call: EffectCall,
        task_id: &str,
        host: Arc<dyn PluginHost>,
    ) -> Result<String, CallError> {
        let plugin = self
            .registry
            .read()
            .ok()
            .and_then(|r| r.effects.get(effect).cloned())
            .ok_or_else(|| CallError::Host {
                plugin: effect.to_owned(),
                message: format!("no loaded plugin provides effect {effect:?}"),
            })?;
        let who = format!("{}@{}", plugin.manifest.name, plugin.manifest.version);
        let _slot = self.slots.acquire().await.map_err(|_| CallError::Host {
            plugin: who.clone(),
            message: "plugin host is shutting down".into(),
        })?;
        runtime::call_effect(
            &self.engine,
            CallSpec {
                plugin: &who,
                pre: &plugin.pre,
                outbound: &plugin.outbound,
                memory_bytes: plugin.manifest.memory_bytes(),
                timeout: plugin.manifest.timeout(),
                fuel: plugin.manifest.limits.fuel,
                task_id,
                host,
            },
            call,
        )
        .await
    }
}
