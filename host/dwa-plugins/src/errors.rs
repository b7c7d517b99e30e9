//! Why the plugin host could not start, or one plugin could not load.

use std::path::PathBuf;

use crate::{manifest, outbound, runtime};

/// Why the plugin host could not start.
#[derive(Debug, thiserror::Error)]
pub enum PluginSetupError {
    /// wasmtime's engine, its epoch thread or the linker could not be set up.
    #[error("plugin host: {0}")]
    Runtime(String),
    /// `DWA_HTTP_ALLOW` has an entry that is not a host, IP or CIDR.
    #[error("plugin host: {0}")]
    AllowList(#[from] outbound::AllowListError),
    /// `DWA_PLUGIN_POLICY` names a file that cannot be read.
    #[error("plugin host: cannot read DWA_PLUGIN_POLICY {path}: {source}")]
    PolicyRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `DWA_PLUGIN_POLICY` is not a policy.
    #[error("plugin host: DWA_PLUGIN_POLICY {path} is invalid: {source}")]
    PolicyInvalid {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// Why one plugin could not be loaded; every message names the manifest
/// file or the plugin (`name@version`).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest file cannot be read.
    #[error("plugin manifest {file}: cannot read: {source}")]
    ReadManifest {
        /// The manifest file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The manifest is not JSON of the manifest's shape.
    #[error("plugin manifest {file}: {source}")]
    ParseManifest {
        /// The manifest file.
        file: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The manifest is well formed but asks for something invalid.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// The component file cannot be read.
    #[error("plugin {who}: cannot read {path}: {source}")]
    ReadWasm {
        /// The plugin.
        who: String,
        /// The component file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a component wasmtime can compile.
    #[error("plugin {who}: not a valid component: {message}")]
    Compile {
        /// The plugin.
        who: String,
        /// wasmtime's reason.
        message: String,
    },
    /// The component imports what this host does not offer.
    #[error(
        "plugin {who}: its imports do not match this host's dwa:plugin@{}.{}.{} (rebuild it against wit/): {message}",
        manifest::HOST_WIT_VERSION.0,
        manifest::HOST_WIT_VERSION.1,
        manifest::HOST_WIT_VERSION.2
    )]
    Imports {
        /// The plugin.
        who: String,
        /// wasmtime's reason.
        message: String,
    },
    /// The component does not export the world its manifest names.
    #[error("plugin {who}: {source}")]
    World {
        /// The plugin.
        who: String,
        /// Why.
        source: runtime::WorldError,
    },
    /// Its HTTP client could not be built.
    #[error("plugin {who}: {source}")]
    Http {
        /// The plugin.
        who: String,
        /// Why.
        source: reqwest::Error,
    },
    /// Another plugin already provides one of its effects, functions or tasks.
    #[error("plugin {who}: {kind} {name:?} is already provided by plugin {other}")]
    Conflict {
        /// The plugin.
        who: String,
        /// `effect`, `function` or `task`.
        kind: &'static str,
        /// What both provide.
        name: String,
        /// The plugin that provides it already.
        other: String,
    },
    /// A thread panicked while holding the registry.
    #[error("plugin registry lock poisoned")]
    Poisoned,
}
