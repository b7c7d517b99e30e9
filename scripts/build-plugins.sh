#!/usr/bin/env bash
# Builds every plugin: first-party ones into plugins/dist (what `dwa serve`
# loads by default), hostile and benchmark ones into plugins/dist-testing
# (used by the tests only). Rust plugins need the wasm32-wasip2 target;
# Python plugins need componentize-py (from PyPI); JavaScript plugins need
# node and componentize-js (from npm). The first two are installed here, and
# componentize-js too when node and npm are present.
set -euo pipefail
shopt -s nullglob
# DWA_REPO overrides the repository root (the scaffold test builds in a copy).
cd "${DWA_REPO:-$(dirname "$0")/..}"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
# simd128: wasmtime runs WebAssembly SIMD, and the tokenizer's regex and the
# image codecs vectorise with it (chunk.text by tokens ~1.3x faster).
CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="${CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS:--C target-feature=+simd128}" \
    cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml
target=$(cargo metadata --format-version 1 --no-deps --manifest-path plugins/Cargo.toml |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
out="$target/wasm32-wasip2/release"

mkdir -p plugins/dist plugins/dist-testing
copy() { # folder, crate prefix, destination
    for dir in plugins/"$1"/*/; do
        name=$(basename "$dir")
        cp "$out/$2_${name//-/_}.wasm" "$3/$name.wasm"
        cp "$dir/plugin.json" "$3/$name.json"
    done
}
copy effects dwa_effect plugins/dist
copy functions dwa_functions plugins/dist
copy transforms dwa_transform plugins/dist
copy testing dwa_testing plugins/dist-testing

# Python plugins: rebuilt only when their sources or the WIT changed.
if ! python3 -c 'import componentize_py' 2>/dev/null; then
    python3 -m pip install --quiet "componentize-py==0.25.*"
fi
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
for dir in plugins/python/*/; do
    name=$(basename "$dir")
    wasm="plugins/dist/$name.wasm"
    world=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["world"].split("/")[1].split("@")[0])' "$dir/plugin.json")
    if [ -f "$wasm" ] && [ -z "$(find "$dir" wit -newer "$wasm" -type f -not -path '*/__pycache__/*' | head -1)" ]; then
        echo "python plugin $name is up to date"
    else
        "$scripts_dir/componentize-py" -d wit -w "$world" componentize app -p "$dir" -o "$wasm"
    fi
    cp "$dir/plugin.json" "plugins/dist/$name.json"
done

# JavaScript plugins: componentize-js from npm (pinned in plugins/js/package-lock.json).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    sudo=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
    if command -v apt-get >/dev/null 2>&1; then
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "error: JavaScript plugins need node (18 or later) and npm, and apt-get is not here to install them" >&2
        exit 1
    fi
fi
if [ ! -d plugins/js/node_modules/@bytecodealliance/componentize-js ]; then
    (cd plugins/js && npm ci --no-audit --no-fund --loglevel=error)
fi
node plugins/js/build.mjs plugins/dist
dist=(plugins/dist/*.wasm)
testing=(plugins/dist-testing/*.wasm)
echo "plugins built: ${#dist[@]} in plugins/dist, ${#testing[@]} in plugins/dist-testing"
