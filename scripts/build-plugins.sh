#!/usr/bin/env bash
# Builds every guest component from source into target/plugins/:
#   - Rust plugins (plugins/*/Cargo.toml) and test fixtures (tests/fixtures/*),
#     compiled for wasm32-wasip2;
#   - Python plugins (plugins/*/app.py), built with componentize-py.
# Called by `just plugins` and by the tests' build.rs. Prints the directory.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/plugins"
mkdir -p "$out"

"$root/scripts/ensure-tools.sh"

# A build.rs runs this with the outer cargo's environment: keep it away from
# the nested guest builds (flags for the host target, a jobserver, etc.).
for var in $(env | grep -oE '^(CARGO_[A-Z_]*|RUSTFLAGS|RUSTC_WRAPPER|RUSTC_WORKSPACE_WRAPPER|RUSTDOC|RUSTC|TARGET|HOST|OUT_DIR|OPT_LEVEL|PROFILE|DEBUG|NUM_JOBS)=' | tr -d '='); do
  case "$var" in CARGO_HOME) ;; *) unset "$var" ;; esac
done

build_rust() {
  local manifest=$1
  cargo build --quiet --release --target wasm32-wasip2 \
    --manifest-path "$manifest" --target-dir "$root/target/wasm" >&2
}
build_rust "$root/plugins/Cargo.toml"
build_rust "$root/tests/fixtures/Cargo.toml"
for wasm in "$root"/target/wasm/wasm32-wasip2/release/*.wasm; do
  cp -p "$wasm" "$out/"
done

# componentize-py takes seconds per plugin: rebuild only when an input changed.
for app in "$root"/plugins/*/app.py; do
  [ -e "$app" ] || continue
  dir=$(dirname "$app")
  name=$(basename "$dir")
  target="$out/$name.wasm"
  newest=$(find "$dir" "$root/sdk/python" "$root/wit" -type f -not -path "*/__pycache__/*" -newer "$target" 2>/dev/null | head -1 || true)
  if [ ! -e "$target" ] || [ -n "$newest" ]; then
    # componentize-py imports every interface of the world it builds against:
    # a plugin with its own wit/ declares a world (local:NAME/plugin) that
    # includes sessiond:plugin/base and adds only the capabilities it uses.
    if [ -d "$dir/wit" ]; then
      wit_args=(-d "$root/wit" -d "$dir/wit" -w "local:$name/plugin")
    else
      wit_args=(-d "$root/wit" -w plugin)
    fi
    (cd "$dir" && componentize-py "${wit_args[@]}" componentize \
        -p "$dir" -p "$root/sdk/python" app -o "$target.tmp" >&2)
    mv "$target.tmp" "$target"
  fi
done

echo "$out"
