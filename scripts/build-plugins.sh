#!/usr/bin/env bash
# Builds every plugin: first-party ones into plugins/dist (what `dwa serve`
# loads by default), hostile and benchmark ones into plugins/dist-testing
# (used by the tests only). Rust plugins need the wasm32-wasip2 target;
# Python plugins need componentize-py (from PyPI). Both are installed here.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
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
copy testing dwa_testing plugins/dist-testing

# Python plugins: rebuilt only when their sources or the WIT changed.
if ! python3 -c 'import componentize_py' 2>/dev/null; then
    python3 -m pip install --quiet "componentize-py==0.25.*"
fi
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
for dir in plugins/python/*/; do
    name=$(basename "$dir")
    wasm="plugins/dist/$name.wasm"
    if [ -f "$wasm" ] && [ -z "$(find "$dir" wit -newer "$wasm" -type f | head -1)" ]; then
        echo "python plugin $name is up to date"
    else
        "$scripts_dir/componentize-py" -d wit -w effect-handler componentize app -p "$dir" -o "$wasm"
    fi
    cp "$dir/plugin.json" "plugins/dist/$name.json"
done
echo "plugins built: $(ls plugins/dist/*.wasm | wc -l) in plugins/dist, $(ls plugins/dist-testing/*.wasm | wc -l) in plugins/dist-testing"
