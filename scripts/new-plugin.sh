#!/usr/bin/env bash
# Scaffolds a Rust effect plugin: plugins/effects/NAME with a manifest that
# `just build-plugins` builds and `dwa serve` loads unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-}"
if ! [[ "$name" =~ ^[a-z][a-z0-9-]{0,40}$ ]]; then
    echo "usage: just new-plugin NAME (lowercase letters, digits and '-', starting with a letter)" >&2
    exit 2
fi
dir="plugins/effects/$name"
if [ -e "$dir" ]; then
    echo "$dir exists already" >&2
    exit 1
fi
if [ -e "plugins/dist/$name.json" ]; then
    echo "a plugin named $name is already built into plugins/dist" >&2
    exit 1
fi
mkdir -p "$dir/src"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "dwa-effect-$name"
description = "The $name effect"
edition.workspace = true
version.workspace = true
license.workspace = true

[lib]
crate-type = ["cdylib"]

[dependencies]
dwa-plugin-sdk.workspace = true
TOML
cat > "$dir/plugin.json" <<JSON
{
  "name": "$name",
  "version": "0.1.0",
  "description": "The $name effect",
  "world": "dwa:plugin/effect-handler@0.1.0",
  "provides": {"effects": ["$name"]},
  "permissions": {"http": []},
  "limits": {"memoryMb": 16, "timeoutMs": 5000}
}
JSON
cat > "$dir/src/lib.rs" <<'RUST'
//! An effect plugin: it receives the effect's config (templates resolved)
//! and the task's status, and may log, emit events, call HTTP (hosts listed
//! in plugin.json's permissions) or enqueue tasks through the host.

use dwa_plugin_sdk::{Effect, EffectCall, PluginError, config, emit, json};

struct Plugin;

impl Effect for Plugin {
    fn handle(call: EffectCall) -> Result<String, PluginError> {
        let cfg = config(&call)?;
        emit(&call.effect, &json!({"lifecycle": call.lifecycle, "config": cfg}))?;
        Ok("{}".into())
    }
}

dwa_plugin_sdk::export_effect!(Plugin);
RUST
echo "created $dir — build it with: just build-plugins"
