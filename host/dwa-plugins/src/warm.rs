//! Idle instances of pure function plugins (manifest `"pure": true`),
//! reused by later calls of the same task: a fresh instance of a
//! JavaScript or Python plugin costs about a millisecond, mostly the kernel
//! copying pages of its memory image on first write; a call into a live one
//! costs microseconds. An instance never serves two tasks, so whatever a
//! plugin keeps between calls stays within the task that made it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmtime::Store as WasmStore;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::runtime::CallState;
use crate::runtime::functions_world::TemplateFunctions;

/// Idle instances one plugin keeps at most: each holds its memory.
const MAX_IDLE: usize = 4;
/// How long an idle instance is kept for its task's next call.
pub const IDLE_FOR: Duration = Duration::from_secs(10);
/// Idle instances all plugins keep at most: the engine's instance pool has
/// this many slots beyond those of the calls running (runtime::engine).
pub const MAX_IDLE_TOTAL: u32 = 64;

/// Idle instances kept now, across plugins.
static IDLE: AtomicUsize = AtomicUsize::new(0);

/// One plugin's idle instances.
#[derive(Default)]
pub struct Warm {
    idle: Mutex<Vec<WarmInstance>>,
}

/// A live instance and the store it lives in, kept for one task.
pub(crate) struct WarmInstance {
    task: String,
    pub(crate) store: WasmStore<CallState>,
    pub(crate) functions: TemplateFunctions,
    pub(crate) stderr: MemoryOutputPipe,
    parked: Instant,
}

impl WarmInstance {
    pub(crate) fn new(
        task: &str,
        store: WasmStore<CallState>,
        functions: TemplateFunctions,
        stderr: MemoryOutputPipe,
    ) -> WarmInstance {
        WarmInstance {
            task: task.to_owned(),
            store,
            functions,
            stderr,
            parked: Instant::now(),
        }
    }
}

impl Warm {
    /// An idle instance `task` used before, if one is kept.
    pub(crate) fn take(&self, task: &str) -> Option<WarmInstance> {
        let mut idle = self.idle.lock().ok()?;
        let at = idle.iter().rposition(|w| w.task == task)?;
        let live = idle.swap_remove(at);
        IDLE.fetch_sub(1, Ordering::Relaxed);
        (live.parked.elapsed() < IDLE_FOR).then_some(live)
    }

    /// Keeps `live` for its task's next call (the oldest idle one goes if
    /// the plugin keeps too many).
    pub(crate) fn put(&self, mut live: WarmInstance) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        live.parked = Instant::now();
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
            IDLE.fetch_sub(1, Ordering::Relaxed);
        }
        // Claimed before it is kept: past the total, it is dropped instead.
        if IDLE.fetch_add(1, Ordering::Relaxed) >= MAX_IDLE_TOTAL as usize {
            IDLE.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        idle.push(live);
    }

    /// Drops the instances idle longer than [`IDLE_FOR`] (their memory
    /// goes back to the pool); answers how many are left.
    pub fn sweep(&self) -> usize {
        let Ok(mut idle) = self.idle.lock() else {
            return 0;
        };
        let before = idle.len();
        idle.retain(|w| w.parked.elapsed() < IDLE_FOR);
        IDLE.fetch_sub(before - idle.len(), Ordering::Relaxed);
        idle.len()
    }
}

impl Drop for Warm {
    // An unloaded (or reloaded) plugin's idle instances leave the total.
    fn drop(&mut self) {
        let kept = self.idle.get_mut().map_or(0, |idle| idle.len());
        IDLE.fetch_sub(kept, Ordering::Relaxed);
    }
}
