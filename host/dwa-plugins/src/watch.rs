//! Hot reload: the plugin folder is polled; a new or rebuilt plugin loads
//! without a restart, a broken rebuild keeps the last good one serving, and
//! a removed manifest unloads its plugin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Plugins;

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

impl Plugins {
    /// Watches `dir` (polling every `every`): a new or rebuilt plugin is
    /// loaded and replaces the old one (calls in flight finish on the old
    /// version); one that fails to load leaves the previous version serving,
    /// and the reason shows in `load_errors`; a removed manifest unloads its
    /// plugin. `changed` is called after each change.
    pub fn watch(
        self: &Arc<Self>,
        dir: PathBuf,
        every: std::time::Duration,
        changed: impl Fn() + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut seen = snapshot(&dir);
            loop {
                tokio::time::sleep(every).await;
                me.sweep_idle();
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
                changed();
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
                    errors.push(e.to_string());
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
}
