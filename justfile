# sessiond — the recipes developers and CI both run.

# sessiond.toml's embedded store keeps the sessions in ./data across restarts.
# Run the server on 127.0.0.1:8080 with the embedded store and the example plugins.
run: plugins
    cargo run --release -p sessiond -- serve --config sessiond.toml

# Run every test: unit, store conformance (memory and a throwaway redis-server),
# runtime tests against the real plugins, and the HTTP integration tests; then
# schemathesis against the debug binary cargo test built.
test: setup
    cargo test --workspace
    scripts/schemathesis.sh
    cd sdk/python && python3 -m unittest -q
    cd plugins/perspective && python3 -m unittest -q

# Formatting and lints, for the host workspace and the guest workspaces.
lint: setup
    python3 scripts/module-graph.py > /dev/null
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo fmt --manifest-path plugins/Cargo.toml --all -- --check
    cargo clippy --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --target-dir target/wasm --workspace -- -D warnings
    cargo fmt --manifest-path tests/fixtures/Cargo.toml --all -- --check
    cargo clippy --manifest-path tests/fixtures/Cargo.toml --target wasm32-wasip2 --target-dir target/wasm --workspace -- -D warnings

# What CI runs.
ci: lint test

# Build every plugin (Rust and Python) and the test fixtures into target/plugins/.
plugins:
    scripts/build-plugins.sh

# Install the wasm32-wasip2 target, componentize-py and redis-server when missing.
setup:
    scripts/ensure-tools.sh

# Criterion benchmarks of hook calls through the real runtime.
bench: plugins
    cargo bench -p sessiond-tests --bench hooks

# Bounded (10 s per run); the table also goes to target/load/report.md; knobs
# (DURATION, CONNECTIONS, PLUGINS, STORES, CONTENDED, ...) in docs/load.md. With
# STORES="embedded memory redis": create, get and update on each store instead.
# HTTP load on Redis with wrk, with and without the example plugins, against the redis-benchmark floor.
load: setup
    scripts/load.sh

# One host, a victim tenant and an attacker tenant: the victim's latency,
# errors and end-hook lag, the host's RSS and log bytes, alone and under
# each attack (about five minutes); the table also goes to
# target/attack/report.md. Knobs (ATTACKS, DURATION, RATE, STORE, ...) in
# docs/attack.md; one attack: ATTACKS=log-flood just attack.
attack: setup
    scripts/attack.sh
