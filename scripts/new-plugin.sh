#!/usr/bin/env bash
# Scaffolds a plugin that `just build-plugins` builds and `dwa serve` loads
# unchanged, for KIND effect | functions | transform and LANG rust | python | js:
#   rust:   plugins/effects/NAME, plugins/functions/NAME or plugins/transforms/NAME
#   python: plugins/python/NAME   (componentize-py)
#   js:     plugins/js/NAME       (componentize-js)
# DWA_REPO overrides the repository root (the scaffold test builds in a copy).
set -euo pipefail
cd "${DWA_REPO:-$(dirname "$0")/..}"
usage() {
    echo "usage: just new-plugin KIND LANG NAME" >&2
    echo "       just new-plugin NAME              (a Rust effect)" >&2
    echo "KIND: effect, functions or transform; LANG: rust, python or js" >&2
    echo "NAME: lowercase letters, digits and '-', starting with a letter" >&2
    exit 2
}
case $# in
    1) kind=effect; lang=rust; name="$1" ;;
    3) kind="$1"; lang="$2"; name="$3" ;;
    *) usage ;;
esac
[[ "$name" =~ ^[a-z][a-z0-9-]{0,40}$ ]] || usage
case "$kind" in effect | functions | transform) ;; *) echo "unknown KIND $kind" >&2; usage ;; esac
case "$lang" in rust | python | js) ;; *) echo "unknown LANG $lang" >&2; usage ;; esac
for d in plugins/effects plugins/functions plugins/transforms plugins/python plugins/js; do
    if [ -e "$d/$name" ] || [ -e "plugins/dist/$name.json" ]; then
        echo "a plugin named $name exists already ($d/$name or plugins/dist/$name.json)" >&2
        exit 1
    fi
done
fn="${name//-/_}"   # function names: letters, digits, '_'
task="$name.run"    # the transform task's name

manifest() { # memory MiB
    local world provides permissions
    case "$kind" in
        effect)
            world=effect-handler
            provides="{\"effects\": [\"$name\"]}"
            permissions='{"http": []}' ;;
        functions)
            world=template-functions
            provides="{\"functions\": [{\"name\": \"$fn\", \"description\": \"Repeats a string n times (default 2)\", \"minArgs\": 0, \"maxArgs\": 1}]}"
            permissions='{}' ;;
        transform)
            world=transform-task
            provides="{\"tasks\": [{\"name\": \"$task\", \"description\": \"Counts the characters of \`text\`; with \`output\`, writes it to that file of the working folder\", \"timeout\": 30, \"inputSchema\": {\"type\": \"object\", \"required\": [\"text\"], \"properties\": {\"text\": {\"type\": \"string\"}, \"output\": {\"type\": \"string\"}}}}]}"
            permissions='{"workdir": true}' ;;
    esac
    cat <<JSON
{
  "name": "$name",
  "version": "0.1.0",
  "description": "The $name plugin ($kind, $lang)",
  "world": "dwa:plugin/$world@0.1.0",
  "provides": $provides,
  "permissions": $permissions,
  "limits": {"memoryMb": $1, "timeoutMs": 5000}
}
JSON
}

rust_crate() { # folder, crate prefix, sdk crate
    dir="plugins/$1/$name"
    mkdir -p "$dir/src"
    cat > "$dir/Cargo.toml" <<TOML
[package]
name = "$2-$name"
description = "The $name plugin"
edition.workspace = true
version.workspace = true
license.workspace = true

[lib]
crate-type = ["cdylib"]

[dependencies]
$3.workspace = true
TOML
    manifest 16 > "$dir/plugin.json"
}

case "$kind/$lang" in
effect/rust)
    rust_crate effects dwa-effect dwa-plugin-sdk
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
    ;;
functions/rust)
    rust_crate functions dwa-functions dwa-functions-sdk
    cat > "$dir/src/lib.rs" <<RUST
//! Template functions: \`{{ payload.word | $fn(3) }}\`. The host calls
//! \`call(name, args)\` with args = [piped value, filter arguments...].

use dwa_functions_sdk::{Functions, PluginError, Value, args, fail};

struct Plugin;

impl Functions for Plugin {
    fn call(name: String, json: String) -> Result<String, PluginError> {
        let a = args(&json)?;
        match name.as_str() {
            "$fn" => {
                let s = a[0].as_str().ok_or_else(|| fail("$fn: expected a string"))?;
                let n = a.get(1).map_or(Some(2), Value::as_u64).ok_or_else(|| fail("$fn: n must be a whole number"))?;
                Ok(Value::from(s.repeat(n.min(1000) as usize)).to_string())
            }
            other => Err(fail(format!("no function {other:?} here"))),
        }
    }
}

dwa_functions_sdk::export_functions!(Plugin);
RUST
    ;;
transform/rust)
    rust_crate transforms dwa-transform dwa-transform-sdk
    cat > "$dir/src/lib.rs" <<'RUST'
//! A transform task: it gets the step's resolved input and answers its
//! result. The task's working folder is the current directory (plugin.json
//! asks for `workdir`); nothing else of the file system is visible.

use dwa_transform_sdk::{PluginError, Transform, Value, fail, input, json, required_str, workdir_path, write_file};

struct Plugin;

impl Transform for Plugin {
    fn run(task: String, json: String) -> Result<String, PluginError> {
        let input = input(&json)?;
        let text = required_str(&input, "text")?;
        if let Some(Value::String(out)) = input.get("output") {
            write_file("output", &workdir_path("output", out)?, text.as_bytes())?;
        } else if input.contains_key("output") {
            return Err(fail("`output` must be a string"));
        }
        Ok(json!({"task": task, "chars": text.chars().count()}).to_string())
    }
}

dwa_transform_sdk::export_transform!(Plugin);
RUST
    ;;
effect/python)
    dir="plugins/python/$name"; mkdir -p "$dir"; manifest 128 > "$dir/plugin.json"
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
    ;;
functions/python)
    dir="plugins/python/$name"; mkdir -p "$dir"; manifest 128 > "$dir/plugin.json"
    cat > "$dir/app.py" <<PY
"""Template functions in Python: \`{{ payload.word | $fn(3) }}\`. The host
calls \`call(name, args)\` with args = [piped value, filter arguments...]."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import PluginError


def fail(message: str) -> Err:
    return Err(PluginError(message=message, retryable=False))


class Functions(exports.Functions):
    def call(self, name: str, args: str) -> str:
        a = json.loads(args)
        if name != "$fn":
            raise fail(f"no function {name!r} here")
        if not isinstance(a[0], str):
            raise fail("$fn: expected a string")
        n = a[1] if len(a) > 1 else 2
        if not isinstance(n, int):
            raise fail("$fn: n must be a whole number")
        return json.dumps(a[0] * min(n, 1000))
PY
    ;;
transform/python)
    dir="plugins/python/$name"; mkdir -p "$dir"; manifest 128 > "$dir/plugin.json"
    cat > "$dir/app.py" <<'PY'
"""A transform task in Python: it gets the step's resolved input and answers
its result. The task's working folder is the current directory (plugin.json
asks for `workdir`); nothing else of the file system is visible."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import PluginError


def fail(message: str) -> Err:
    return Err(PluginError(message=message, retryable=False))


class Transform(exports.Transform):
    def run(self, task: str, input: str) -> str:
        inp = json.loads(input)
        text = inp.get("text")
        if not isinstance(text, str):
            raise fail("`text` is required (a string)")
        out = inp.get("output")
        if out is not None:
            if not isinstance(out, str) or out.startswith("/") or ".." in out.split("/"):
                raise fail("`output` must be a relative path inside the working folder")
            with open(out, "w", encoding="utf-8") as f:
                f.write(text)
        return json.dumps({"task": task, "chars": len(text)})
PY
    ;;
effect/js)
    dir="plugins/js/$name"; mkdir -p "$dir"; manifest 64 > "$dir/plugin.json"
    cat > "$dir/index.js" <<'JS'
// An effect plugin in JavaScript: it receives the effect's config (templates
// resolved) and the task's status, and may log, emit events, call HTTP (hosts
// listed in plugin.json's permissions) or enqueue tasks through the host.
// A thrown {message, retryable} becomes the call's error.
import { emit } from "dwa:plugin/host@0.1.0";

export const effect = {
  handle(call) {
    let config;
    try {
      config = JSON.parse(call.config);
    } catch (e) {
      throw { message: `${call.effect}: bad config: ${e}`, retryable: false };
    }
    emit(call.effect, JSON.stringify({ lifecycle: call.lifecycle, config }));
    return "{}";
  },
};
JS
    ;;
functions/js)
    dir="plugins/js/$name"; mkdir -p "$dir"; manifest 64 > "$dir/plugin.json"
    cat > "$dir/index.js" <<JS
// Template functions in JavaScript: \`{{ payload.word | $fn(3) }}\`. The host
// calls \`call(name, args)\` with args = [piped value, filter arguments...].
// A thrown {message, retryable} becomes the call's error.
const fail = (message) => {
  throw { message, retryable: false };
};

export const functions = {
  call(name, args) {
    const [value, n = 2] = JSON.parse(args);
    if (name !== "$fn") fail(\`no function \${name} here\`);
    if (typeof value !== "string") fail("$fn: expected a string");
    if (!Number.isInteger(n)) fail("$fn: n must be a whole number");
    return JSON.stringify(value.repeat(Math.min(n, 1000)));
  },
};
JS
    ;;
transform/js)
    dir="plugins/js/$name"; mkdir -p "$dir"
    # JavaScript components get no file system here: no working folder.
    manifest 64 | sed 's/"workdir": true/"workdir": false/; s/; with `output`, writes it to that file of the working folder//' > "$dir/plugin.json"
    cat > "$dir/index.js" <<'JS'
// A transform task in JavaScript: it gets the step's resolved input (JSON
// text) and answers its result. A thrown {message, retryable} becomes the
// call's error.
export const transform = {
  run(task, input) {
    const inp = JSON.parse(input);
    if (typeof inp.text !== "string") throw { message: "`text` is required (a string)", retryable: false };
    return JSON.stringify({ task, chars: [...inp.text].length });
  },
};
JS
    ;;
esac
echo "created $dir — build it with: just build-plugins"
