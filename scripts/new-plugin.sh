#!/usr/bin/env bash
# Scaffolds an effect plugin that `just build-plugins` builds and `dwa serve`
# loads unchanged: in Rust (plugins/effects/NAME) or Python (plugins/python/NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
usage() {
    echo "usage: just new-plugin NAME            (a Rust effect)" >&2
    echo "       just new-plugin KIND LANG NAME  (KIND: effect; LANG: rust or python)" >&2
    echo "NAME: lowercase letters, digits and '-', starting with a letter" >&2
    exit 2
}
case $# in
    1) kind=effect; lang=rust; name="$1" ;;
    3) kind="$1"; lang="$2"; name="$3" ;;
    *) usage ;;
esac
if ! [[ "$name" =~ ^[a-z][a-z0-9-]{0,40}$ ]]; then
    usage
fi
if [ "$kind" != "effect" ]; then
    echo "kind $kind is not available yet: this host implements the effect-handler world (dwa:plugin@0.1.0)" >&2
    exit 2
fi
if [ -e "plugins/dist/$name.json" ] || [ -e "plugins/effects/$name" ] || [ -e "plugins/python/$name" ]; then
    echo "a plugin named $name exists already" >&2
    exit 1
fi
manifest() { # memory MiB
    cat <<JSON
{
  "name": "$name",
  "version": "0.1.0",
  "description": "The $name effect",
  "world": "dwa:plugin/effect-handler@0.1.0",
  "provides": {"effects": ["$name"]},
  "permissions": {"http": []},
  "limits": {"memoryMb": $1, "timeoutMs": 5000}
}
JSON
}
case "$lang" in
    rust) ;;
    python)
        dir="plugins/python/$name"
        mkdir -p "$dir"
        manifest 128 > "$dir/plugin.json"
        cat > "$dir/app.py" <<'PY'
"""An effect plugin in Python: it receives the effect's config (templates
resolved) and the task's status, and may log, emit events, call HTTP (hosts
listed in plugin.json's permissions) or enqueue tasks through the host."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import PluginError


class Effect(exports.Effect):
    def handle(self, call) -> str:
        try:
            config = json.loads(call.config)
        except ValueError as e:
            raise Err(PluginError(message=f"{call.effect}: bad config: {e}", retryable=False))
        host.emit(call.effect, json.dumps({"lifecycle": call.lifecycle, "config": config}))
        return "{}"
PY
        echo "created $dir — build it with: just build-plugins"
        exit 0
        ;;
    *)
        echo "language $lang is not scaffolded yet (rust, python); see docs/plugins.md for JavaScript" >&2
        exit 2
        ;;
esac
dir="plugins/effects/$name"
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
manifest 16 > "$dir/plugin.json"
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
