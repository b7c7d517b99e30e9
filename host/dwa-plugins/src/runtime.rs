//! The wasmtime side: one engine with the pooling allocator and epoch
//! interruption, the `dwa:plugin` host interface, and per-call stores with a
//! fresh instance, a memory cap, a deadline that traps, and optional fuel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine as WasmEngine, ResourceLimiter, Store as WasmStore, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::outbound::{self, Outbound};
use crate::warm::{Warm, WarmInstance};

/// Bindings of the `effect-handler` world (and of the shared `types` and `host`).
#[allow(missing_docs)] // generated from the WIT, whose own comments document it
pub mod effect_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "effect-handler",
        imports: { default: async },
        exports: { default: async },
    });
}

/// Bindings of the `template-functions` world (and of `logging`).
#[allow(missing_docs)] // generated from the WIT, whose own comments document it
pub mod functions_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "template-functions",
        imports: { default: async },
        exports: { default: async },
        with: {
            "dwa:plugin/types": crate::runtime::effect_world::dwa::plugin::types,
        },
    });
}

/// Bindings of the `transform-task` world.
#[allow(missing_docs)] // generated from the WIT, whose own comments document it
pub mod transform_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "transform-task",
        imports: { default: async },
        exports: { default: async },
        with: {
            "dwa:plugin/types": crate::runtime::effect_world::dwa::plugin::types,
            "dwa:plugin/logging": crate::runtime::functions_world::dwa::plugin::logging,
        },
    });
}

use effect_world::dwa;
pub use effect_world::dwa::plugin::host::LogLevel;
pub use effect_world::exports::dwa::plugin::effect::EffectCall;
pub use effect_world::{EffectHandler, EffectHandlerPre};
pub use functions_world::{TemplateFunctions, TemplateFunctionsPre};
pub use transform_world::TransformTaskPre;

/// A plugin pre-instantiated for the world it implements.
pub enum Pre {
    /// An effect handler.
    Effect(EffectHandlerPre<CallState>),
    /// Template functions.
    Functions(TemplateFunctionsPre<CallState>),
    /// Transform tasks.
    Transform(TransformTaskPre<CallState>),
}

/// Why a component cannot serve the world its manifest names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorldError {
    /// No world of that name runs here.
    #[error("world {0:?} is not one this host runs")]
    Unknown(String),
    /// The component lacks some of the world's exports.
    #[error("does not export the {world} world: {message}")]
    MissingExports {
        /// The world.
        world: String,
        /// wasmtime's reason.
        message: String,
    },
}

impl Pre {
    /// Checks that `pre`'s component exports what `world` needs.
    pub fn new(
        world: &str,
        pre: wasmtime::component::InstancePre<CallState>,
    ) -> Result<Pre, WorldError> {
        let r = match world {
            "effect-handler" => EffectHandlerPre::new(pre).map(Pre::Effect),
            "template-functions" => TemplateFunctionsPre::new(pre).map(Pre::Functions),
            "transform-task" => TransformTaskPre::new(pre).map(Pre::Transform),
            other => return Err(WorldError::Unknown(other.to_owned())),
        };
        r.map_err(|e| WorldError::MissingExports {
            world: world.to_owned(),
            message: format!("{e:#}"),
        })
    }
}

/// One call into a plugin.
pub enum Call {
    /// Fire an effect.
    Effect(EffectCall),
    /// Call a template function with `[value, args...]`.
    Function {
        /// Function name.
        name: String,
        /// JSON array text.
        args: String,
    },
    /// Run a transform task.
    Transform {
        /// Task name.
        task: String,
        /// JSON input text.
        input: String,
    },
}

/// Epoch ticks per second: the deadline's granularity.
pub const TICK: Duration = Duration::from_millis(5);
/// Component instances alive at once across all plugins.
pub const MAX_INSTANCES: u32 = 256;

/// What the engine offers plugins beyond WASI: events and new tasks.
#[async_trait]
pub trait PluginHost: Send + Sync {
    /// Records an event on a task's stream.
    async fn emit(&self, task_id: &str, event: &str, data: Value) -> Result<(), ServiceError>;
    /// Submits a task on behalf of task `parent` (whose effect asks); answers its id.
    async fn enqueue(&self, parent: &str, task: Value) -> Result<String, ServiceError>;
}

/// Why the engine did not do a plugin's `emit` or `enqueue`; the guest
/// receives the text (the WIT's error is a string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The plugin's world does not offer the service.
    #[error("not available to this plugin")]
    NotAvailable,
    /// What the plugin sent cannot be accepted (not a task, an invalid one).
    #[error("{0}")]
    Refused(String),
    /// The host could not do it now (its store failed): another try may pass.
    #[error("{0}")]
    Unavailable(String),
}

/// Why a call failed; every variant names the plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The plugin answered with an error of its own.
    #[error("plugin {plugin}: {message}")]
    Plugin {
        /// Plugin name and version.
        plugin: String,
        /// Its message.
        message: String,
        /// Whether it may pass on a retry.
        retryable: bool,
    },
    /// It ran past its deadline and was stopped.
    #[error("plugin {plugin}: stopped after its time limit of {limit_ms} ms")]
    Deadline {
        /// Plugin name and version.
        plugin: String,
        /// The limit.
        limit_ms: u64,
    },
    /// It tried to grow past its memory limit and was stopped.
    #[error("plugin {plugin}: stopped for exceeding its memory limit of {limit_mb} MiB")]
    Memory {
        /// Plugin name and version.
        plugin: String,
        /// The limit.
        limit_mb: usize,
    },
    /// It ran out of fuel.
    #[error("plugin {plugin}: stopped after using all its fuel ({fuel})")]
    Fuel {
        /// Plugin name and version.
        plugin: String,
        /// The limit.
        fuel: u64,
    },
    /// It trapped (a panic, an unreachable, a bad access).
    #[error("plugin {plugin}: trapped: {message}")]
    Trap {
        /// Plugin name and version.
        plugin: String,
        /// The trap.
        message: String,
    },
    /// The host could not run it (instantiation failed, no free slot).
    #[error("plugin {plugin}: {message}")]
    Host {
        /// Plugin name and version.
        plugin: String,
        /// What failed.
        message: String,
    },
}

/// Memory accounting that remembers a refusal, so the trap that follows it
/// can be reported as what it is.
struct MemLimiter {
    max: usize,
    refused: bool,
}

impl ResourceLimiter for MemLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Per-call state of a store.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemLimiter,
    plugin: String,
    task_id: String,
    outbound: Outbound,
    host: Arc<dyn PluginHost>,
    deadline: Instant,
    delivery: Option<String>,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl dwa::plugin::types::Host for CallState {}

/// Event names a plugin may not emit: they are the engine's own.
fn reserved(event: &str) -> bool {
    event.starts_with("step:") || event.starts_with("pipeline:") || event.starts_with("effect:")
}

impl CallState {
    fn log_line(&self, level: LogLevel, message: &str) {
        let plugin = self.plugin.as_str();
        let message: String = message.chars().take(4096).collect();
        match level {
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl functions_world::dwa::plugin::logging::Host for CallState {
    async fn log(&mut self, level: functions_world::dwa::plugin::logging::Level, message: String) {
        use functions_world::dwa::plugin::logging::Level;
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        self.log_line(level, &message);
    }
}

impl dwa::plugin::host::Host for CallState {
    async fn log(&mut self, level: LogLevel, message: String) {
        self.log_line(level, &message);
    }

    async fn http_fetch(
        &mut self,
        request: dwa::plugin::host::HttpRequest,
    ) -> Result<dwa::plugin::host::HttpResponse, String> {
        let mut headers = request.headers;
        // The same id on every try of this effect's delivery, so that a
        // receiver can drop a repeat (delivery is at least once).
        if let Some(id) = &self.delivery
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("x-dwa-delivery"))
        {
            headers.push(("X-DWA-Delivery".into(), id.clone()));
        }
        let req = outbound::Request {
            method: request.method,
            url: request.url,
            headers,
            body: request.body,
            timeout: request
                .timeout_ms
                .map(|ms| Duration::from_millis(u64::from(ms))),
        };
        // The guest sees the refusal's text: the WIT's error is a string.
        let resp = self
            .outbound
            .fetch(req, self.deadline)
            .await
            .map_err(|e| e.to_string())?;
        Ok(dwa::plugin::host::HttpResponse {
            status: resp.status,
            headers: resp.headers,
            body: resp.body,
        })
    }

    async fn emit(&mut self, event: String, data: String) -> Result<(), String> {
        let valid = !event.is_empty()
            && event.len() <= 64
            && event
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.'));
        if !valid {
            return Err(format!(
                "event name {event:?} must be 1-64 letters, digits, ':', '-', '_' or '.'"
            ));
        }
        if reserved(&event) {
            return Err(format!("event name {event:?} is reserved for the engine"));
        }
        let data: Value =
            serde_json::from_str(&data).map_err(|e| format!("event data is not JSON: {e}"))?;
        self.host
            .emit(&self.task_id, &event, data)
            .await
            .map_err(|e| e.to_string())
    }

    async fn enqueue(&mut self, task: String) -> Result<String, String> {
        let task: Value =
            serde_json::from_str(&task).map_err(|e| format!("task is not JSON: {e}"))?;
        self.host
            .enqueue(&self.task_id, task)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Builds the engine every plugin runs on.
pub fn engine() -> Result<WasmEngine, String> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(true);
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    // Room for the calls running and for pure plugins' idle instances.
    let instances = MAX_INSTANCES + crate::warm::MAX_IDLE_TOTAL;
    pool.total_component_instances(instances);
    pool.total_core_instances(instances * 8);
    pool.total_memories(instances * 2);
    pool.total_tables(instances * 4);
    pool.max_memory_size(1 << 30);
    // Give memory back to the OS in batches: each madvise makes the kernel
    // shoot down TLBs on every core, which dominated a fresh instance's cost.
    pool.decommit_batch_size(32);

    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    let engine = WasmEngine::new(&config).map_err(|e| format!("cannot start wasmtime: {e}"))?;
    // The epoch clock that turns deadlines into traps.
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("dwa-plugin-epoch".into())
        .spawn(move || {
            while let Some(e) = weak.upgrade() {
                e.increment_epoch();
                drop(e);
                std::thread::sleep(TICK);
            }
        })
        .map_err(|e| format!("cannot start the epoch thread: {e}"))?;
    Ok(engine)
}

/// The linker with WASI (no files, sockets or environment granted) and the host interface.
pub fn linker(engine: &WasmEngine) -> Result<Linker<CallState>, String> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| e.to_string())?;
    EffectHandler::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(|e| e.to_string())?;
    functions_world::dwa::plugin::logging::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(|e| e.to_string())?;
    Ok(linker)
}

/// Everything one call needs.
pub struct CallSpec<'a> {
    /// `name@version`.
    pub plugin: &'a str,
    /// The plugin's pre-instantiated component.
    pub pre: &'a Pre,
    /// Its HTTP capability.
    pub outbound: &'a Outbound,
    /// Memory cap.
    pub memory_bytes: usize,
    /// Time cap.
    pub timeout: Duration,
    /// Fuel cap.
    pub fuel: Option<u64>,
    /// The task the call is for.
    pub task_id: &'a str,
    /// The engine's services.
    pub host: Arc<dyn PluginHost>,
    /// The folder preopened as `.` (granted transform tasks only).
    pub workdir: Option<&'a std::path::Path>,
    /// An effect delivery's id, sent as `X-DWA-Delivery` on its HTTP.
    pub delivery: Option<&'a str>,
    /// A pure function plugin's idle instances (reused within a task).
    pub warm: Option<&'a Warm>,
}

/// Runs one call in a fresh instance, in a `plugin.call` span (a child of
/// the step or effect it serves, in that task's trace).
pub async fn call(
    engine: &WasmEngine,
    spec: CallSpec<'_>,
    call: Call,
) -> Result<String, CallError> {
    let (kind, name) = match &call {
        Call::Effect(c) => ("effect", c.effect.as_str()),
        Call::Function { name, .. } => ("function", name.as_str()),
        Call::Transform { task, .. } => ("transform", task.as_str()),
    };
    let span = tracing::info_span!(target: "dwa_otel", "plugin.call",
        otel.name = %format_args!("plugin {} {kind} {name}", spec.plugin),
        plugin = spec.plugin, kind, name,
        otel.status_code = tracing::field::Empty, error = tracing::field::Empty);
    let r = tracing::Instrument::instrument(run_call(engine, spec, call), span.clone()).await;
    if let Err(e) = &r {
        span.record("otel.status_code", "ERROR");
        span.record("error", tracing::field::display(e));
    }
    r
}

async fn run_call(
    engine: &WasmEngine,
    spec: CallSpec<'_>,
    call: Call,
) -> Result<String, CallError> {
    if let (Pre::Functions(pre), Some(warm)) = (spec.pre, spec.warm) {
        return run_warm(engine, &spec, pre, &call, warm).await;
    }
    let (mut store, stderr) = new_store(engine, &spec)?;
    let fuel = arm(&mut store, &spec)?;
    let result = async {
        match (spec.pre, &call) {
            (Pre::Effect(pre), Call::Effect(c)) => {
                let b = pre.instantiate_async(&mut store).await?;
                b.dwa_plugin_effect().call_handle(&mut store, c).await
            }
            (Pre::Functions(pre), Call::Function { name, args }) => {
                let b = pre.instantiate_async(&mut store).await?;
                b.dwa_plugin_functions()
                    .call_call(&mut store, name, args)
                    .await
            }
            (Pre::Transform(pre), Call::Transform { task, input }) => {
                let b = pre.instantiate_async(&mut store).await?;
                b.dwa_plugin_transform()
                    .call_run(&mut store, task, input)
                    .await
            }
            _ => Err(wasmtime::Error::msg(
                "this plugin does not implement the world this call needs",
            )),
        }
    }
    .await;
    outcome(result, &store, &stderr, &spec, fuel)
}

/// A pure plugin's function call: in an idle instance this task used
/// before, else in a fresh one, which is kept for the task's next call
/// unless the call trapped (docs/plugins.md, "Pure function plugins").
async fn run_warm(
    engine: &WasmEngine,
    spec: &CallSpec<'_>,
    pre: &TemplateFunctionsPre<CallState>,
    call: &Call,
    warm: &Warm,
) -> Result<String, CallError> {
    let Call::Function { name, args } = call else {
        return Err(CallError::Host {
            plugin: spec.plugin.to_owned(),
            message: "a template-functions plugin takes function calls only".into(),
        });
    };
    let mut live = match warm.take(spec.task_id) {
        Some(live) => live,
        None => {
            let (mut store, stderr) = new_store(engine, spec)?;
            arm(&mut store, spec)?;
            let functions = match pre.instantiate_async(&mut store).await {
                Ok(f) => f,
                Err(e) => {
                    let fuel = spec.fuel.unwrap_or(u64::MAX);
                    return outcome(Err(e), &store, &stderr, spec, fuel);
                }
            };
            WarmInstance::new(spec.task_id, store, functions, stderr)
        }
    };
    let fuel = arm(&mut live.store, spec)?;
    let result = live
        .functions
        .dwa_plugin_functions()
        .call_call(&mut live.store, name, args)
        .await;
    let answer = outcome(result, &live.store, &live.stderr, spec, fuel);
    // A trap may leave the instance's state anywhere: never reuse it.
    if matches!(answer, Ok(_) | Err(CallError::Plugin { .. })) {
        warm.put(live);
    }
    answer
}

/// A store for one call (or, for a pure plugin, one task's calls), with the
/// WASI context the call may have and the plugin's memory cap.
fn new_store(
    engine: &WasmEngine,
    spec: &CallSpec<'_>,
) -> Result<
    (
        WasmStore<CallState>,
        wasmtime_wasi::p2::pipe::MemoryOutputPipe,
    ),
    CallError,
> {
    // No preopens (but a granted working folder), no environment, no
    // sockets, no name lookup: WASI gives the plugin clocks, randomness and
    // (discarded) stdio, nothing more. stderr is kept (bounded) so that a
    // panic message can explain a trap.
    let stderr = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(8 * 1024);
    let mut builder = wasmtime_wasi::WasiCtxBuilder::new();
    builder
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .stderr(stderr.clone());
    if let Some(dir) = spec.workdir {
        builder
            .preopened_dir(dir, ".", wasmtime_wasi::FsPerms::ReadWrite)
            .map_err(|e| CallError::Host {
                plugin: spec.plugin.to_owned(),
                message: format!("cannot open the working folder {}: {e}", dir.display()),
            })?;
    }
    let wasi = builder.build();
    let state = CallState {
        wasi,
        table: ResourceTable::new(),
        limiter: MemLimiter {
            max: spec.memory_bytes,
            refused: false,
        },
        plugin: spec.plugin.to_owned(),
        task_id: spec.task_id.to_owned(),
        outbound: spec.outbound.clone(),
        host: spec.host.clone(),
        deadline: Instant::now() + spec.timeout,
        delivery: spec.delivery.map(str::to_owned),
    };
    let mut store = WasmStore::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    Ok((store, stderr))
}

/// Sets the call's deadline (an epoch trap and the host's own clock) and
/// fuel; answers the fuel given.
fn arm(store: &mut WasmStore<CallState>, spec: &CallSpec<'_>) -> Result<u64, CallError> {
    let ticks = (spec.timeout.as_millis() / TICK.as_millis()).max(1) as u64 + 1;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();
    store.data_mut().deadline = Instant::now() + spec.timeout;
    store.data_mut().limiter.refused = false;
    let fuel = spec.fuel.unwrap_or(u64::MAX);
    store.set_fuel(fuel).map_err(|e| CallError::Host {
        plugin: spec.plugin.to_owned(),
        message: e.to_string(),
    })?;
    Ok(fuel)
}

/// What a call's result means for the caller: the plugin's answer, its own
/// error, or why it stopped (memory, deadline, fuel, a trap and what it
/// printed last).
fn outcome(
    result: wasmtime::Result<Result<String, dwa::plugin::types::PluginError>>,
    store: &WasmStore<CallState>,
    stderr: &wasmtime_wasi::p2::pipe::MemoryOutputPipe,
    spec: &CallSpec<'_>,
    fuel: u64,
) -> Result<String, CallError> {
    let plugin = spec.plugin.to_owned();
    match result {
        Ok(Ok(json)) => Ok(json),
        Ok(Err(e)) => Err(CallError::Plugin {
            plugin,
            message: e.message,
            retryable: e.retryable,
        }),
        Err(e) => {
            let mut err = classify(
                &e,
                plugin,
                store.data().limiter.refused,
                spec.memory_bytes,
                spec.timeout,
                fuel,
            );

            if let CallError::Trap { message, .. } = &mut err {
                let said = String::from_utf8_lossy(&stderr.contents()).to_string();
                // The last line Rust's panic hook prints is a hint about
                // backtraces; the message is the line before it.
                if let Some(line) = said
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty() && !l.starts_with("note: run with"))
                {
                    message.push_str(&format!(" (stderr: {})", line.trim()));
                }
            }
            Err(err)
        }
    }
}

fn classify(
    e: &wasmtime::Error,
    plugin: String,
    memory_refused: bool,
    memory_bytes: usize,
    timeout: Duration,
    fuel: u64,
) -> CallError {
    if memory_refused {
        return CallError::Memory {
            plugin,
            limit_mb: memory_bytes >> 20,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Deadline {
            plugin,
            limit_ms: timeout.as_millis() as u64,
        },
        Some(Trap::OutOfFuel) => CallError::Fuel { plugin, fuel },
        Some(trap) => CallError::Trap {
            plugin,
            message: trap.to_string(),
        },
        None => CallError::Host {
            plugin,
            message: format!("{e:#}"),
        },
    }
}
