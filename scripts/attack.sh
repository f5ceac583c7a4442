#!/usr/bin/env bash
# The attack benchmark (`just attack`, docs/attack.md): one sessiond with a
# victim tenant and an attacker tenant, restarted for every attack. Per
# attack the victim is measured alone, then while the attacker's plugin (the
# `attacker` test fixture) and clients attack; prints a markdown table
# (also written to target/attack/report.md): the victim's create p50, p99
# and errors, its end-hook lag, the host's peak RSS and the log bytes it
# wrote, each "alone → under attack", and which of the targets it misses.
#
# Builds target/release/sessiond, the plugins and the driver
# (tests/src/bin/attack.rs, a debug build), then runs the driver. About
# 25 s per attack: some five minutes for all ten with the defaults.
#
# Knobs (environment):
#   ATTACKS      the attacks to run, in order (default: all of harmless grow
#                hold loop log-flood kv-flood end-panic end-sleep
#                invalid-output load-error); e.g. ATTACKS=log-flood
#   DURATION     seconds under attack (10); BASELINE: seconds alone (DURATION)
#   RATE         victim creates per second, open loop (500)
#   CONNECTIONS  attacker clients, closed loop (50); HOLD_CONNECTIONS for
#                `hold` (200)
#   STORE        memory (default), redis (a throwaway redis-server per
#                attack) or embedded (a fresh data directory per attack)
#   DELETE_AFTER_MS  how long each victim session lives before its DELETE (100)
#   END_WAIT     seconds to wait for the victim's outstanding end hooks (5)
#   RSS_LIMIT_MIB, LOG_LIMIT_MIB  stop an attack early when the host's RSS
#                (4096) or its log (1024) passes this; the row says so
#   RSS_BUDGET_MIB  the RSS the host must stay under to meet the target (1024)
#   RUNTIME_TOML extra lines for the generated config's [runtime] table
#   SERVER_TOML  extra lines for its [server] table (e.g. max_in_flight = 32)
#   SERVER_CPU, LOAD_CPU  sessiond runs on SERVER_CPU (0), the driver on
#                LOAD_CPU (1)
#   LOG          sessiond's RUST_LOG (warn)
#   SESSIOND_BIN a sessiond binary to measure instead of building
#                target/release/sessiond (e.g. target/debug/sessiond)
#   PLUGIN_DIR   the built components (default: build into target/plugins)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { echo "attack: $*" >&2; }

SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
if [ "$(nproc)" -lt 2 ]; then
  say "fewer than 2 CPUs: everything runs on CPU 0"
  SERVER_CPU=0 LOAD_CPU=0
fi
export SERVER_CPU
command -v taskset >/dev/null 2>&1 || { say "taskset is needed"; exit 1; }
if [ "${STORE:-memory}" = redis ]; then
  command -v redis-server >/dev/null 2>&1 || scripts/ensure-tools.sh
fi

if [ -z "${SESSIOND_BIN:-}" ]; then
  say "building target/release/sessiond"
  cargo build --release --quiet -p sessiond
  export SESSIOND_BIN="$root/target/release/sessiond"
fi
if [ -z "${PLUGIN_DIR:-}" ]; then
  say "building the plugins"
  scripts/build-plugins.sh >/dev/null
  export PLUGIN_DIR="$root/target/plugins"
fi
# The driver is a debug build: it only sends requests and reads a few
# files, on a CPU of its own, and a debug build of the tests crate is what
# `cargo test` already left behind (a release one would build wasmtime again).
say "building the driver"
cargo build --quiet -p sessiond-tests --bin attack

# 200 attacker connections and the victim's: more than the usual 1024.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

mkdir -p target/attack
ROOT="$root" taskset -c "$LOAD_CPU" target/debug/attack | tee target/attack/report.md.tmp
mv target/attack/report.md.tmp target/attack/report.md
say "written to target/attack/report.md"
