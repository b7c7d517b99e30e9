//! # dwa-plugins — the WebAssembly plugin host
//!
//! Loads components and their manifests from
//! `DWA_PLUGIN_DIR`, compiles each once (precompiled artifacts cached by the
//! wasm's hash and the engine's compatibility hash), pre-instantiates them,
//! grants each the intersection of what its manifest asks and what the
//! operator allows, and runs every call in a fresh, bounded instance.
//!
//! - [`manifest`]: the manifest format and the world-version check.
//! - [`granter`]: every grant decision (manifest asks ∩ operator allows).
//! - [`outbound`]: outbound HTTP behind capability and address checks.
//! - [`runtime`]: wasmtime engine, host interface, limits, one call.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Semaphore;
use utoipa::ToSchema;
use wasmtime::Engine as WasmEngine;
use wasmtime::component::{Component, Linker};

mod artifacts;
mod errors;
pub mod granter;
pub mod manifest;
pub mod outbound;
pub mod runtime;
pub mod warm;
mod watch;

pub use artifacts::{UNUSED_ARTIFACT_TTL, precompile};
pub use errors::{LoadError, PluginSetupError};

use granter::Granter;
pub use granter::{Grants, OperatorPolicy};

use manifest::Manifest;
use outbound::{NetPolicy, Outbound};
use runtime::{Call, CallError, CallSpec, CallState, EffectCall, PluginHost, Pre, ServiceError};

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
    /// `DWA_WORK_DIR`: where each task's working folder is made.
    pub work_dir: PathBuf,
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
    /// Template functions it exports.
    pub functions: Vec<String>,
    /// Transform tasks it runs.
    pub tasks: Vec<String>,
    /// Whether it asked for its task's working folder.
    pub asked_workdir: bool,
    /// Whether it was granted it.
    pub granted_workdir: bool,
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
    /// Its compiled component, ready to instantiate: set at load, or at the
    /// first call of a lazily loaded plugin (from `deferred`).
    pre: std::sync::OnceLock<Result<Pre, String>>,
    /// A lazily loaded plugin's cached artifact and world.
    deferred: Option<(PathBuf, String)>,
    outbound: Outbound,
    info: PluginInfo,
    /// Idle instances kept between a task's calls (pure function plugins).
    warm: warm::Warm,
}

impl Loaded {
    /// Everything it provides, as (kind, name), for the registry's indexes.
    fn provided(&self) -> Vec<(Kind, String)> {
        let p = &self.manifest.provides;
        let mut v: Vec<(Kind, String)> = p
            .effects
            .iter()
            .map(|e| (Kind::Effect, e.clone()))
            .collect();
        v.extend(p.functions.iter().map(|f| (Kind::Function, f.name.clone())));
        v.extend(p.tasks.iter().map(|t| (Kind::Task, t.name.clone())));
        v
    }
}

/// What a plugin can provide; names are unique within a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Effect,
    Function,
    Task,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Effect => "effect",
            Kind::Function => "function",
            Kind::Task => "task",
        }
    }
}

#[derive(Default)]
struct Registry {
    plugins: BTreeMap<String, Arc<Loaded>>,
    provided: HashMap<(Kind, String), Arc<Loaded>>,
}

impl Registry {
    fn remove(&mut self, name: &str) -> Option<Arc<Loaded>> {
        let old = self.plugins.remove(name)?;
        for key in old.provided() {
            self.provided.remove(&key);
        }
        Some(old)
    }

    fn find(&self, kind: Kind, name: &str) -> Result<Arc<Loaded>, CallError> {
        self.provided
            .get(&(kind, name.to_owned()))
            .cloned()
            .ok_or_else(|| CallError::Host {
                plugin: name.to_owned(),
                message: format!("no loaded plugin provides {} {name:?}", kind.noun()),
            })
    }
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
    engine: WasmEngine,
    linker: Linker<CallState>,
    net: Arc<NetPolicy>,
    policy: Option<OperatorPolicy>,
    artifacts: artifacts::Artifacts,
    /// Whether a plugin whose artifact is cached is mapped at its first
    /// call rather than at load ([`Plugins::lazily`]).
    lazy: bool,
    registry: RwLock<Registry>,
    slots: Semaphore,
    errors: RwLock<Vec<String>>,
    work_dir: PathBuf,
}

impl Plugins {
    /// Sets up the engine, linker and policies (no plugin loaded yet).
    pub fn new(config: &PluginConfig) -> Result<Plugins, PluginSetupError> {
        let engine = runtime::engine().map_err(PluginSetupError::Runtime)?;
        let linker = runtime::linker(&engine).map_err(PluginSetupError::Runtime)?;
        let net = NetPolicy::parse(&config.http_allow)?;
        let policy = match &config.policy_file {
            None => None,
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|source| PluginSetupError::PolicyRead {
                        path: p.clone(),
                        source,
                    })?;
                Some(serde_json::from_str(&text).map_err(|source| {
                    PluginSetupError::PolicyInvalid {
                        path: p.clone(),
                        source,
                    }
                })?)
            }
        };
        Ok(Plugins {
            engine,
            linker,
            net: Arc::new(net),
            policy,
            artifacts: artifacts::Artifacts {
                dir: config.cache_dir.clone(),
                compiler: None,
            },
            registry: RwLock::new(Registry::default()),
            lazy: false,
            slots: Semaphore::new(runtime::MAX_INSTANCES as usize),
            errors: RwLock::new(Vec::new()),
            work_dir: config.work_dir.clone(),
        })
    }

    /// Compiles components missing from the artifact cache by running
    /// `command` with the component's path and the artifact's path appended
    /// (`dwa __compile-plugin`), so that the compiler's memory leaves with
    /// the child; a failed child falls back to compiling here.
    pub fn with_compiler(mut self, command: Vec<std::ffi::OsString>) -> Self {
        self.artifacts.compiler = Some(command);
        self
    }

    /// Maps a plugin whose compiled artifact is cached at its first call,
    /// not at load: a host keeps in memory only the plugins it uses (a
    /// Python or JavaScript one holds 6-8 MB once mapped). Its manifest is
    /// still read and checked at load, so submissions know its names; a
    /// plugin not in the cache is compiled, and so checked, at load.
    pub fn lazily(mut self) -> Self {
        self.lazy = true;
        self
    }

    /// Loads every manifest (`*.json`) in `dir`; a broken plugin is reported and skipped.
    pub fn load_dir(&self, dir: &Path) -> LoadReport {
        let mut report = LoadReport::default();
        if !dir.exists() {
            // No plugin folder is a normal state (plugins not built): the
            // caller says so; it is not a load error.
            return report;
        }
        let manifests = match manifest::manifest_paths(dir) {
            Ok(m) => m,
            Err(e) => {
                report
                    .errors
                    .push(format!("cannot read plugin dir {}: {e}", dir.display()));
                return report;
            }
        };
        for path in manifests {
            match self.load(&path) {
                Ok(name) => report.loaded.push(name),
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        if let Ok(mut errs) = self.errors.write() {
            errs.clone_from(&report.errors);
        }
        self.artifacts.sweep(artifacts::UNUSED_ARTIFACT_TTL);
        report
    }

    /// Loads one plugin from its manifest, replacing a loaded one of the same name.
    pub fn load(&self, manifest_path: &Path) -> Result<String, LoadError> {
        let started = Instant::now();
        let file = manifest_path.display().to_string();
        let text =
            std::fs::read_to_string(manifest_path).map_err(|source| LoadError::ReadManifest {
                file: file.clone(),
                source,
            })?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|source| LoadError::ParseManifest {
                file: file.clone(),
                source,
            })?;
        let world = manifest.validate(&file)?;
        let wasm_name = manifest
            .wasm
            .clone()
            .unwrap_or_else(|| format!("{}.wasm", manifest.name));
        let wasm_path = manifest_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&wasm_name);
        let who = format!("{}@{}", manifest.name, manifest.version);
        let read_error = |source| LoadError::ReadWasm {
            who: who.clone(),
            path: wasm_path.display().to_string(),
            source,
        };
        let sha = artifacts::file_sha256(&wasm_path).map_err(read_error)?;
        let cached = match self.lazy {
            true => self.artifacts.cached(&self.engine, &sha),
            false => None,
        };
        let (pre, from_cache, deferred) = match cached {
            Some(artifact) => (std::sync::OnceLock::new(), true, Some(artifact)),
            None => {
                let (pre, compiled) = self.compiled(&who, &world.world, &wasm_path, &sha)?;
                let from_cache = compiled == artifacts::Compiled::Cached;
                match self
                    .lazy
                    .then(|| self.artifacts.cached(&self.engine, &sha))
                    .flatten()
                {
                    // Compiled and checked; mapped again at its first call.
                    Some(artifact) => (std::sync::OnceLock::new(), from_cache, Some(artifact)),
                    None => (std::sync::OnceLock::from(Ok(pre)), from_cache, None),
                }
            }
        };
        let deferred = deferred.map(|artifact| (artifact, world.world.clone()));
        let granter = Arc::new(Granter::new(
            &who,
            manifest.permissions.http.clone(),
            manifest.permissions.workdir,
            self.policy.as_ref().map(|p| p.grants_for(&manifest.name)),
        ));
        let outbound =
            Outbound::new(granter.clone(), self.net.clone()).map_err(|source| LoadError::Http {
                who: who.clone(),
                source,
            })?;
        let info = PluginInfo {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            world: format!(
                "dwa:plugin/{}@{}.{}.{}",
                world.world, world.version.0, world.version.1, world.version.2
            ),
            description: manifest.description.clone(),
            effects: manifest.provides.effects.clone(),
            functions: manifest
                .provides
                .functions
                .iter()
                .map(|f| f.name.clone())
                .collect(),
            tasks: manifest
                .provides
                .tasks
                .iter()
                .map(|t| t.name.clone())
                .collect(),
            asked_workdir: manifest.permissions.workdir,
            granted_workdir: granter.workdir(),
            asked_http: granter.asked_http().to_vec(),
            granted_http: granter.http_patterns(),
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
            deferred,
            outbound,
            info,
            warm: warm::Warm::default(),
        });
        let mut reg = self.registry.write().map_err(|_| LoadError::Poisoned)?;
        let provided = loaded.provided();
        for key in &provided {
            if let Some(other) = reg.provided.get(key)
                && other.manifest.name != loaded.manifest.name
            {
                return Err(LoadError::Conflict {
                    who,
                    kind: key.0.noun(),
                    name: key.1.clone(),
                    other: other.manifest.name.clone(),
                });
            }
        }
        reg.remove(&loaded.manifest.name);
        for key in provided {
            reg.provided.insert(key, loaded.clone());
        }
        reg.plugins.insert(loaded.manifest.name.clone(), loaded);
        tracing::info!(plugin = %who, from_cache, lazy = self.lazy && from_cache, "plugin loaded");
        Ok(who)
    }

    /// A component, compiled or from the cache, checked against the host's
    /// imports and its world's exports.
    fn compiled(
        &self,
        who: &str,
        world: &str,
        wasm_path: &Path,
        sha: &str,
    ) -> Result<(Pre, artifacts::Compiled), LoadError> {
        let (component, compiled) = self
            .artifacts
            .component(&self.engine, wasm_path, sha)
            .map_err(|message| LoadError::Compile {
                who: who.to_owned(),
                message,
            })?;
        let pre = self.checked(who, world, &component)?;
        Ok((pre, compiled))
    }

    fn checked(&self, who: &str, world: &str, component: &Component) -> Result<Pre, LoadError> {
        let instance_pre =
            self.linker
                .instantiate_pre(component)
                .map_err(|e| LoadError::Imports {
                    who: who.to_owned(),
                    message: format!("{e:#}"),
                })?;
        Pre::new(world, instance_pre).map_err(|source| LoadError::World {
            who: who.to_owned(),
            source,
        })
    }

    /// A loaded plugin's component; a lazily loaded one's is mapped now.
    fn pre_of<'a>(&self, plugin: &'a Loaded, who: &str) -> Result<&'a Pre, CallError> {
        plugin
            .pre
            .get_or_init(|| {
                let Some((artifact, world)) = &plugin.deferred else {
                    return Err("its component was never loaded".to_owned());
                };
                let component = self.artifacts.map(&self.engine, artifact)?;
                self.checked(who, world, &component)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|message| CallError::Host {
                plugin: who.to_owned(),
                message: format!("cannot load its cached component: {message}"),
            })
    }

    /// Names of the effects loaded plugins provide.
    pub fn effects(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .registry
            .read()
            .map(|r| {
                r.provided
                    .keys()
                    .filter(|(k, _)| *k == Kind::Effect)
                    .map(|(_, n)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The template functions loaded plugins export, with their (fewest, most) arguments.
    pub fn functions(&self) -> BTreeMap<String, (usize, usize)> {
        self.registry
            .read()
            .map(|r| {
                r.plugins
                    .values()
                    .flat_map(|p| p.manifest.provides.functions.iter())
                    .map(|f| (f.name.clone(), f.arity()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Everything the loaded plugins provide, for the catalog.
    pub fn provides(&self) -> dwa_core::catalog::PluginProvides {
        dwa_core::catalog::PluginProvides {
            effects: self.effects(),
            functions: self.functions(),
            tasks: self.tasks(),
        }
    }

    /// The transform tasks loaded plugins run, as catalog entries (backend `wasm`).
    pub fn tasks(&self) -> Vec<dwa_core::catalog::TaskInfo> {
        self.registry
            .read()
            .map(|r| {
                r.plugins
                    .values()
                    .flat_map(|p| p.manifest.provides.tasks.iter())
                    .map(manifest::TaskDecl::task_info)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The working folder of a task (made by the first transform that needs
    /// it, with [`make_workdir`]).
    pub fn task_workdir(&self, task_id: &str) -> Option<PathBuf> {
        let safe = !task_id.is_empty()
            && task_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        safe.then(|| self.work_dir.join(task_id))
    }

    /// Unloads a plugin (its manifest was removed); in-flight calls finish.
    pub fn unload(&self, name: &str) -> bool {
        let Ok(mut reg) = self.registry.write() else {
            return false;
        };
        reg.remove(name).is_some()
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

    /// Runs the plugin that handles `effect`; `delivery` (a stable id of
    /// this effect's delivery) goes out as `X-DWA-Delivery` on its HTTP.
    pub async fn call_effect(
        &self,
        effect: &str,
        call: EffectCall,
        task_id: &str,
        host: Arc<dyn PluginHost>,
        delivery: Option<&str>,
    ) -> Result<String, CallError> {
        let plugin = self.find(Kind::Effect, effect)?;
        let ctx = RunContext {
            task_id,
            host: Some(host),
            workdir: None,
            delivery,
        };
        self.run(&plugin, ctx, Call::Effect(call)).await
    }

    /// Calls template function `name` on `value` with `args`; answers its JSON.
    pub async fn call_function(
        &self,
        name: &str,
        value: &serde_json::Value,
        args: &[serde_json::Value],
        task_id: &str,
    ) -> Result<serde_json::Value, CallError> {
        let plugin = self.find(Kind::Function, name)?;
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(value.clone());
        all.extend_from_slice(args);
        let call = Call::Function {
            name: name.to_owned(),
            args: serde_json::Value::Array(all).to_string(),
        };
        let ctx = RunContext {
            task_id,
            host: None,
            workdir: None,
            delivery: None,
        };
        let out = self.run(&plugin, ctx, call).await?;
        parse_answer(&plugin, &out)
    }

    /// Runs transform task `task` on `input` for task `task_id`.
    pub async fn run_task(
        &self,
        task: &str,
        input: &serde_json::Value,
        task_id: &str,
    ) -> Result<serde_json::Value, CallError> {
        let plugin = self.find(Kind::Task, task)?;
        let who = format!("{}@{}", plugin.manifest.name, plugin.manifest.version);
        let workdir = if plugin.info.granted_workdir {
            let dir = self.task_workdir(task_id).ok_or_else(|| CallError::Host {
                plugin: who.clone(),
                message: format!("task id {task_id:?} cannot name a working folder"),
            })?;
            make_workdir(&dir).await.map_err(|e| CallError::Host {
                plugin: who.clone(),
                message: format!("cannot make the working folder {}: {e}", dir.display()),
            })?;
            Some(dir)
        } else {
            None
        };
        let call = Call::Transform {
            task: task.to_owned(),
            input: input.to_string(),
        };
        let out = self
            .run(
                &plugin,
                RunContext {
                    task_id,
                    host: None,
                    workdir: workdir.as_deref(),
                    delivery: None,
                },
                call,
            )
            .await?;
        parse_answer(&plugin, &out)
    }

    /// Drops pure plugins' instances idle longer than
    /// [`warm::IDLE_FOR`] (the folder watch does this each tick); answers
    /// how many are kept.
    pub fn sweep_idle(&self) -> usize {
        self.registry
            .read()
            .map(|r| r.plugins.values().map(|p| p.warm.sweep()).sum())
            .unwrap_or(0)
    }

    fn find(&self, kind: Kind, name: &str) -> Result<Arc<Loaded>, CallError> {
        self.registry
            .read()
            .map_err(|_| CallError::Host {
                plugin: name.to_owned(),
                message: "plugin registry lock poisoned".into(),
            })?
            .find(kind, name)
    }

    async fn run(
        &self,
        plugin: &Loaded,
        ctx: RunContext<'_>,
        call: Call,
    ) -> Result<String, CallError> {
        let RunContext {
            task_id,
            host,
            workdir,
            delivery,
        } = ctx;
        let who = format!("{}@{}", plugin.manifest.name, plugin.manifest.version);
        let _slot = self.slots.acquire().await.map_err(|_| CallError::Host {
            plugin: who.clone(),
            message: "plugin host is shutting down".into(),
        })?;
        let pre = self.pre_of(plugin, &who)?;
        let warm = plugin.manifest.pure.then(|| {
            plugin.warm.sweep();
            &plugin.warm
        });
        runtime::call(
            &self.engine,
            CallSpec {
                plugin: &who,
                pre,
                outbound: &plugin.outbound,
                memory_bytes: plugin.manifest.memory_bytes(),
                timeout: plugin.manifest.timeout(),
                fuel: plugin.manifest.limits.fuel,
                task_id,
                host: host.unwrap_or_else(|| Arc::new(NoServices)),
                workdir,
                delivery,
                warm,
            },
            call,
        )
        .await
    }
}

/// On whose behalf a plugin call runs.
struct RunContext<'a> {
    task_id: &'a str,
    /// The engine's services (effects only).
    host: Option<Arc<dyn PluginHost>>,
    /// The task's working folder (granted transforms only).
    workdir: Option<&'a Path>,
    /// The delivery id of an effect call (`X-DWA-Delivery`).
    delivery: Option<&'a str>,
}

/// The file that marks a task's working folder as made by dwa: the host
/// removes a folder of `DWA_WORK_DIR` only when it holds this file (and its
/// task is gone), never an operator's folder that happens to be there.
pub const WORKDIR_MARKER: &str = ".dwa-workdir";

/// Makes a task's working folder, marked as dwa's ([`WORKDIR_MARKER`]).
pub async fn make_workdir(dir: &std::path::Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let marker = dir.join(WORKDIR_MARKER);
    if tokio::fs::symlink_metadata(&marker).await.is_err() {
        tokio::fs::write(&marker, b"made by dwa for this task; removed with it\n").await?;
    }
    Ok(())
}

/// What functions and transforms get for `emit`/`enqueue`: nothing (their
/// worlds do not import them; this only fills the call's slot).
struct NoServices;

#[async_trait::async_trait]
impl PluginHost for NoServices {
    async fn emit(&self, _: &str, _: &str, _: serde_json::Value) -> Result<(), ServiceError> {
        Err(ServiceError::NotAvailable)
    }
    async fn enqueue(&self, _: &str, _: serde_json::Value) -> Result<String, ServiceError> {
        Err(ServiceError::NotAvailable)
    }
}

fn parse_answer(plugin: &Loaded, out: &str) -> Result<serde_json::Value, CallError> {
    serde_json::from_str(out).map_err(|e| CallError::Plugin {
        plugin: format!("{}@{}", plugin.manifest.name, plugin.manifest.version),
        message: format!("answered something that is not JSON: {e}"),
        retryable: false,
    })
}

/// Plugin filters for the templates of one task.
pub struct TaskFunctions<'a> {
    /// The plugin host (None: plugins are disabled).
    pub plugins: Option<&'a Plugins>,
    /// The task whose templates are resolved.
    pub task_id: &'a str,
}

#[async_trait::async_trait]
impl dwa_core::template::Functions for TaskFunctions<'_> {
    async fn call(
        &self,
        name: &str,
        value: &serde_json::Value,
        args: &[serde_json::Value],
    ) -> Result<serde_json::Value, String> {
        let Some(p) = self.plugins else {
            return Err("plugins are disabled on this host".into());
        };
        let started = std::time::Instant::now();
        let r = p
            .call_function(name, value, args, self.task_id)
            .await
            .map_err(|e| e.to_string());
        // GET /metrics (docs/api.md, "Metrics").
        metrics::histogram!("dwa_plugin_call_seconds", "kind" => "function", "name" => name.to_owned())
            .record(started.elapsed().as_secs_f64());
        r
    }
}
