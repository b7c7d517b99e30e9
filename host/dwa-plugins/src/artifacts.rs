//! Compiled plugins: the artifact cache (one `.cwasm` per component and
//! engine configuration, mapped from its file on later loads) and where a
//! missing artifact is compiled. Cranelift's memory for a 12-18 MB Python
//! or JavaScript component is hundreds of MB that a process never gives
//! back, so a host compiles in a child process when it can (docs/plugins.md,
//! "Loading").

use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;
use wasmtime::Engine as WasmEngine;
use wasmtime::component::Component;

/// The SHA-256 of a file, read in pieces: with the artifact cached, the
/// component's bytes are never held.
pub(crate) fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Compiles the component `wasm` for this host's engine into the artifact
/// file `out` (written whole, then renamed into place). What the child
/// process of [`Artifacts::with_compiler`] runs.
pub fn precompile(wasm: &Path, out: &Path) -> Result<(), String> {
    let engine = crate::runtime::engine()?;
    let bytes = std::fs::read(wasm).map_err(|e| format!("cannot read {}: {e}", wasm.display()))?;
    let compiled = engine
        .precompile_component(&bytes)
        .map_err(|e| format!("{e:#}"))?;
    write_atomically(out, &compiled).map_err(|e| format!("cannot write {}: {e}", out.display()))
}

fn write_atomically(out: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, out)
}

/// How long an artifact no load has used stays in the cache: rebuilt
/// plugins leave their old artifacts behind (30-40 MB for a Python one), and
/// hosts sharing the folder may still load older versions for a while.
pub const UNUSED_ARTIFACT_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// How a component was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compiled {
    /// Mapped from the artifact cache.
    Cached,
    /// Compiled by a child process, then mapped from the cache.
    InChild,
    /// Compiled in this process.
    Here,
}

/// The artifact cache and the compiler to fill it with.
pub(crate) struct Artifacts {
    pub(crate) dir: Option<PathBuf>,
    /// The command that compiles one component: it is run with the
    /// component's path and the artifact's path appended.
    pub(crate) compiler: Option<Vec<OsString>>,
}

impl Artifacts {
    /// The component at `wasm` (whose SHA-256 is `sha`) for `engine`.
    pub(crate) fn component(
        &self,
        engine: &WasmEngine,
        wasm: &Path,
        sha: &str,
    ) -> Result<(Component, Compiled), String> {
        let key = key(engine, sha);
        let Some(dir) = &self.dir else {
            return Ok((compile_here(engine, wasm)?, Compiled::Here));
        };
        let path = dir.join(&key);
        if path.exists() {
            match map(engine, &path) {
                Ok(c) => {
                    touch(&path);
                    return Ok((c, Compiled::Cached));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring a bad cached artifact")
                }
            }
        }
        if let Some(command) = &self.compiler {
            match compile_in_child(command, wasm, &path).and_then(|()| map(engine, &path)) {
                Ok(c) => return Ok((c, Compiled::InChild)),
                Err(e) => tracing::warn!(wasm = %wasm.display(), error = %e,
                    "compiling in a child process failed; compiling here"),
            }
        }
        let component = compile_here(engine, wasm)?;
        let cached = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|bytes| write_atomically(&path, &bytes));
        if let Err(e) = cached {
            tracing::warn!(error = %e, "could not cache a compiled plugin");
        }
        Ok((component, Compiled::Here))
    }
}

impl Artifacts {
    /// The cached artifact of the component whose SHA-256 is `sha`, if there
    /// is one (marked used): a lazy load maps it at the first call.
    pub(crate) fn cached(&self, engine: &WasmEngine, sha: &str) -> Option<PathBuf> {
        let path = self.dir.as_ref()?.join(key(engine, sha));
        path.exists().then(|| {
            touch(&path);
            path
        })
    }

    /// Maps a cached artifact (see [`Artifacts::cached`]).
    pub(crate) fn map(&self, engine: &WasmEngine, path: &Path) -> Result<Component, String> {
        map(engine, path)
    }

    /// Removes the cache's artifacts (and a crashed compile's leftovers)
    /// that no load has used for `ttl`: every load marks the artifact it
    /// maps or writes, so those in use are never older. A running host that
    /// mapped one keeps its mapping. Returns how many went.
    pub(crate) fn sweep(&self, ttl: std::time::Duration) -> usize {
        let Some(dir) = &self.dir else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let Some(cutoff) = std::time::SystemTime::now().checked_sub(ttl) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let ours = name.to_str().is_some_and(|n| n.contains(".cwasm"));
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if ours && old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, dir = %dir.display(), "unused plugin artifacts removed");
        }
        removed
    }
}

/// Marks an artifact used now (its modification time), for [`Artifacts::sweep`].
fn touch(path: &Path) {
    let marked = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(e) = marked {
        tracing::debug!(path = %path.display(), error = %e, "artifact not marked as used");
    }
}

/// An artifact's file name: the component's SHA-256 and the engine's
/// configuration, so that another configuration never maps it.
fn key(engine: &WasmEngine, sha: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{sha}-{:016x}.cwasm", h.finish())
}

fn compile_here(engine: &WasmEngine, wasm: &Path) -> Result<Component, String> {
    let bytes = std::fs::read(wasm).map_err(|e| format!("cannot read it: {e}"))?;
    Component::new(engine, bytes).map_err(|e| format!("{e:#}"))
}

/// Maps an artifact file this host's engine configuration wrote.
fn map(engine: &WasmEngine, path: &Path) -> Result<Component, String> {
    // SAFETY: the file is one this host or its compiler child wrote (for
    // this exact wasm and engine configuration, which its name holds);
    // `deserialize_file` is unsafe only because a forged artifact could be.
    unsafe { Component::deserialize_file(engine, path) }.map_err(|e| format!("{e:#}"))
}

fn compile_in_child(command: &[OsString], wasm: &Path, out: &Path) -> Result<(), String> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| "the compiler command is empty".to_owned())?;
    let done = Command::new(program)
        .args(args)
        .arg(wasm)
        .arg(out)
        .output()
        .map_err(|e| format!("cannot start {}: {e}", Path::new(program).display()))?;
    if !done.status.success() {
        let said = String::from_utf8_lossy(&done.stderr);
        return Err(format!("{}: {}", done.status, said.trim()));
    }
    Ok(())
}
