#!/usr/bin/env bash
# HTTP load on the Redis store: create, get, update (PATCH) and delete, once
# with no plugins and once with the example plugins (single-session, audit-log,
# perspective), against a throwaway redis-server and target/release/sessiond,
# both on 127.0.0.1 only. Prints a markdown table (also written to
# target/load/report.md) and the two target ratios. See docs/load.md.
#
# With STORES (e.g. STORES="embedded memory redis"), measures the stores
# instead: create, get and update without plugins on each backend named, in
# that order, in one table, plus the embedded store's bytes on disk per idle
# session after its create run (no floor, no delete, no round-trip counts).
#
# Each measured run is bounded: DURATION seconds of wrk (default 10) with
# CONNECTIONS (50) connections on THREADS (2) threads. Whole script: about
# two minutes plus the release build.
#
# Pinning (2 cores): sessiond on SERVER_CPU (0); redis-server and wrk on
# LOAD_CPU (1); redis-benchmark, the floor's client, on SERVER_CPU, where
# sessiond is during the API runs.
#
# Environment: DURATION, WARMUP (seconds, 2), CONNECTIONS, THREADS,
# SERVER_CPU, LOAD_CPU, LOG (sessiond's RUST_LOG, default warn: an info line
# per request would be measured too), CALIBRATE (requests per operation for
# the round-trip count, 20), BENCH_REQUESTS (redis-benchmark -n, 200000),
# RUNTIME_TOML (extra lines for the generated config's [runtime] table, e.g.
# "max_idle_instances = 64"), LOG_TOML (lines for a [log] table, e.g.
# 'format = "json"' and 'spans = true' on two lines: LOG still sets the
# levels), METRICS_TOML (lines for a [metrics] table, e.g. "enabled = false":
# nothing counted), PLUGINS (the chain of the second run, in order;
# default "single-session audit-log perspective"), KEEP_WORK (keep the
# temporary directory), SESSIOND_BIN (a sessiond binary to measure instead of
# building target/release/sessiond, e.g. an older build kept for an A/B run),
# PLUGIN_DIR (the built components to load; default target/plugins), STORES
# (see above), EMBEDDED_DURABILITY (the embedded store's durability with
# STORES, default full), CONTENDED (see below).
#
# With CONTENDED=1, measures contended writes instead: CONNECTIONS (default
# 20 here) connections PATCH one session without If-Match on Redis, once
# with no plugins (the store merges each patch atomically) and once with the
# `updater` test fixture, whose on-session-update hook sends every patch
# through the chain and the compare-and-set write. Prints writes/s, the
# count of non-200 answers and the session's final version.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
lua_dir="$root/scripts/load"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONTENDED=${CONTENDED:-}
if [ -n "$CONTENDED" ]; then CONNECTIONS=${CONNECTIONS:-20}; else CONNECTIONS=${CONNECTIONS:-50}; fi
THREADS=${THREADS:-2}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
LOG=${LOG:-warn}
CALIBRATE=${CALIBRATE:-20}
BENCH_REQUESTS=${BENCH_REQUESTS:-200000}
RUNTIME_TOML=${RUNTIME_TOML:-}
LOG_TOML=${LOG_TOML:-}
METRICS_TOML=${METRICS_TOML:-}
PLUGINS=${PLUGINS:-single-session audit-log perspective}
STORES=${STORES:-}
EMBEDDED_DURABILITY=${EMBEDDED_DURABILITY:-full}
KEY=load-test-key-not-secret

say() { echo "load: $*" >&2; }

for store in $STORES; do
  case $store in
    embedded | memory | redis) ;;
    *) say "unknown store $store (STORES: embedded, memory, redis)"; exit 1 ;;
  esac
done

# ------------------------------------------------------------------ tools

install_pkg() {
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq "$@" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "$@" >&2; }
  else
    sudo apt-get install -y -qq "$@" >&2 || { sudo apt-get update -qq >&2 && sudo apt-get install -y -qq "$@" >&2; }
  fi
}
command -v wrk >/dev/null 2>&1 || { say "installing wrk"; install_pkg wrk; }
command -v redis-server >/dev/null 2>&1 || "$root/scripts/ensure-tools.sh"
command -v redis-benchmark >/dev/null 2>&1 || { say "installing redis-tools"; install_pkg redis-tools; }
for tool in curl python3 taskset redis-cli; do
  command -v "$tool" >/dev/null 2>&1 || { say "$tool is needed"; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
  say "fewer than 2 CPUs: everything runs on CPU 0"
  SERVER_CPU=0 LOAD_CPU=0
fi

if [ -n "${SESSIOND_BIN:-}" ]; then
  bin=$SESSIOND_BIN
  say "measuring $bin"
else
  say "building target/release/sessiond"
  (cd "$root" && cargo build --release --quiet -p sessiond)
  bin="$root/target/release/sessiond"
fi
if [ -n "${PLUGIN_DIR:-}" ]; then
  plugins=$PLUGIN_DIR
else
  say "building the plugins"
  "$root/scripts/build-plugins.sh" >/dev/null
  plugins="$root/target/plugins"
fi
needed="single_session audit_log perspective"
[ -z "$CONTENDED" ] || needed="updater"
for p in $needed; do
  [ -f "$plugins/$p.wasm" ] || { say "missing $plugins/$p.wasm"; exit 1; }
done

# ------------------------------------------------------------------ processes

work=$(mktemp -d /tmp/sessiond-load.XXXXXX)
redis_pid=""
server_pid=""
monitor_pid=""
monitored=0
cleanup() {
  for pid in "$monitor_pid" "$server_pid" "$redis_pid"; do
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  done
  for pid in "$monitor_pid" "$server_pid" "$redis_pid"; do
    if [ -n "$pid" ]; then wait "$pid" 2>/dev/null || true; fi
  done
  if [ -n "${KEEP_WORK:-}" ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

rport=$(free_port)
rcli() { redis-cli -h 127.0.0.1 -p "$rport" "$@"; }
# Without STORES, or with redis among them.
if [ -z "$STORES" ] || [[ " $STORES " == *" redis "* ]]; then
  taskset -c "$LOAD_CPU" redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --logfile "$work/redis.log" &
  redis_pid=$!
  for _ in $(seq 100); do
    [ "$(rcli PING 2>/dev/null)" = PONG ] && break
    sleep 0.1
  done
  [ "$(rcli PING 2>/dev/null)" = PONG ] || { say "redis-server did not start"; cat "$work/redis.log" >&2; exit 1; }
  say "redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$rport (CPU $LOAD_CPU)"
fi

key_hash="sha256:$(printf %s "$KEY" | sha256sum | awk '{print $1}')"

# store_toml STORE NAME: the [store] table's keys; the embedded store keeps
# its data in $work/data-NAME.
store_toml() {
  case $1 in
    # The grace period must outlast ten of the rare sweeps below.
    redis) printf 'backend = "redis"\nurls = ["redis://127.0.0.1:%s"]\ngrace_seconds = 86400\n' "$rport" ;;
    embedded) printf 'backend = "embedded"\npath = "%s"\ndurability = "%s"\n' \
      "$work/data-$2" "$EMBEDDED_DURABILITY" ;;
    memory) printf 'backend = "memory"\n' ;;
  esac
}

# write_config FILE PORT WITH_PLUGINS [STORE]: STORE defaults to redis.
write_config() {
  local file=$1 port=$2 with_plugins=$3 store=${4:-redis}
  cat >"$file" <<EOF
[server]
listen = "127.0.0.1:$port"

[store]
$(store_toml "$store" "$(basename "$file" .toml)")

[runtime]
cache_dir = "$root/.cache/sessiond"
$RUNTIME_TOML

[log]
$LOG_TOML

[metrics]
$METRICS_TOML

[sweeper]
# Nothing expires during a run: keep the sweeper out of the counts.
interval_ms = 3600000

[tenants.load]
api_keys = ["$key_hash"]
ttl_seconds = 3600
max_ttl_seconds = 86400
idle_timeout_seconds = 3600
EOF
  [ "$with_plugins" = yes ] || return 0
  local p
  for p in $PLUGINS; do
    case $p in
      single-session) cat >>"$file" <<EOF

[[tenants.load.plugins]]
name = "single-session"
path = "$plugins/single_session.wasm"
grants = ["sessions"]
config = { max_sessions = "1" }
EOF
        ;;
      audit-log) cat >>"$file" <<EOF

[[tenants.load.plugins]]
name = "audit-log"
path = "$plugins/audit_log.wasm"
grants = ["audit"]
EOF
        ;;
      perspective) cat >>"$file" <<EOF

[[tenants.load.plugins]]
name = "perspective"
path = "$plugins/perspective.wasm"
grants = ["kv", "sessions", "audit"]
limits = { deadline_ms = 1000 }
EOF
        ;;
      *) say "unknown plugin $p (PLUGINS)"; exit 1 ;;
    esac
  done
}

base=""
start_server() {
  local config=$1 port=$2
  RUST_LOG="$LOG" taskset -c "$SERVER_CPU" "$bin" serve --config "$config" \
    2>"$work/sessiond.log" &
  server_pid=$!
  base="http://127.0.0.1:$port"
  for _ in $(seq 1200); do
    curl -fsS "$base/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  say "sessiond did not start:"; tail -20 "$work/sessiond.log" >&2; exit 1
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# ------------------------------------------------------------------ measuring

results="$work/results.tsv"
: >"$results"

# wrk_run OP SECONDS [VAR=VALUE...]: runs scripts/load/OP.lua, prints its RESULT line.
wrk_run() {
  local op=$1 seconds=$2
  shift 2
  env LOAD_LUA_DIR="$lua_dir" LOAD_KEY="$KEY" LOAD_THREADS="$THREADS" "$@" \
    taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --timeout 5s --latency \
    -s "$lua_dir/$op.lua" "$base" >"$work/wrk.out" 2>&1 || { cat "$work/wrk.out" >&2; exit 1; }
  grep '^RESULT ' "$work/wrk.out" || { cat "$work/wrk.out" >&2; exit 1; }
}

# Redis commands since the last CONFIG RESETSTAT: "<all commands> <scripts>",
# without the INFO and CONFIG calls of this script. Commands that scripts
# run count in INFO commandstats too.
redis_counts() {
  rcli INFO commandstats | tr -d '\r' | awk -F'[:,=]' '
    /^cmdstat_/ {
      name = substr($1, 9)
      if (name == "info" || name ~ /^config/) next
      all += $3
      if (name == "evalsha" || name == "eval") scripts += $3
    }
    END { printf "%d %d\n", all, scripts }'
}

# measure CONFIG OP [VAR=VALUE...]: one measured run, appended to the results.
measure() {
  local config=$1 op=$2
  shift 2
  rcli CONFIG RESETSTAT >/dev/null
  local line counts
  line=$(wrk_run "$op" "$DURATION" "$@")
  counts=$(redis_counts)
  say "$config $op: $line"
  printf '%s\t%s\t%s\t%s\n' "$config" "$op" "$line" "$counts" >>"$results"
}

# Round trips per API call, counted exactly: MONITOR shows every command a
# client sends, and each command a script runs on a separate "lua" line.
# CALIBRATE sequential requests per operation, after the load (not during).
monitor_start() {
  # Not through rcli: $! must be redis-cli itself, not a subshell.
  redis-cli -h 127.0.0.1 -p "$rport" MONITOR >"$work/monitor.out" &
  monitor_pid=$!
  sleep 0.3
}
monitor_stop() {
  sleep 0.3
  kill "$monitor_pid" 2>/dev/null || true
  wait "$monitor_pid" 2>/dev/null || true
  monitor_pid=""
  # Client lines look like `1700000000.000000 [0 127.0.0.1:40000] "EVALSHA" ...`.
  monitored=$(grep -cE '^[0-9.]+ \[[0-9]+ [0-9]' "$work/monitor.out" || true)
}

calibrate() {
  local config=$1 n=$CALIBRATE i ids=() id code
  local auth=(-H "Authorization: Bearer $KEY")
  monitor_start
  for i in $(seq "$n"); do
    id=$(curl -fsS "${auth[@]}" -H 'Content-Type: application/json' \
      -d "{\"user\":\"calibrate-$config-$i\",\"data\":{\"theme\":\"dark\"}}" "$base/v1/sessions" |
      grep -oE '"id":"[A-Za-z0-9_-]+"' | cut -d'"' -f4)
    ids+=("$id")
  done
  monitor_stop
  printf '%s\tcreate\t%s\n' "$config" "$(python3 -c "print($monitored / $n)")" >>"$work/roundtrips.tsv"
  for op in get update delete; do
    monitor_start
    for id in "${ids[@]}"; do
      case $op in
        get) code=$(curl -sS -o /dev/null -w '%{http_code}' "${auth[@]}" "$base/v1/sessions/$id") ;;
        update) code=$(curl -sS -o /dev/null -w '%{http_code}' "${auth[@]}" -X PATCH \
          -H 'Content-Type: application/merge-patch+json' -d '{"cart":{"items":2}}' "$base/v1/sessions/$id") ;;
        delete) code=$(curl -sS -o /dev/null -w '%{http_code}' "${auth[@]}" -X DELETE "$base/v1/sessions/$id") ;;
      esac
      [ "${code:0:1}" = 2 ] || say "calibration: $op answered $code"
    done
    monitor_stop
    printf '%s\t%s\t%s\n' "$config" "$op" "$(python3 -c "print($monitored / $n)")" >>"$work/roundtrips.tsv"
  done
}

# DELETE answers once the end is queued; the end hooks run right after on
# the end worker. Waits (at most 5 minutes) until the tenant's end queue is
# empty, so the hooks do not run into the calibration, and reports how long
# the backlog took.
drain_ends() {
  local config=$1 started left
  started=$(date +%s.%N)
  for _ in $(seq 3000); do
    left=$(curl -fsS -H "Authorization: Bearer $KEY" "$base/v1/ends" |
      python3 -c 'import json,sys; q=json.load(sys.stdin); print(q["waiting"] + q["claimed"])')
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  printf '%s	%s	%s
' "$config" "$left" \
    "$(python3 -c "import time; print(round(time.time() - $started, 1))")" >>"$work/drain.tsv"
}

# run_config NAME WITH_PLUGINS
run_config() {
  local name=$1 with_plugins=$2 port
  port=$(free_port)
  write_config "$work/$name.toml" "$port" "$with_plugins"
  rcli FLUSHALL >/dev/null
  say "$name: starting sessiond on 127.0.0.1:$port (CPU $SERVER_CPU; plugins: $with_plugins)"
  start_server "$work/$name.toml" "$port"
  wrk_run create "$WARMUP" LOAD_RUN="$name-warmup" >/dev/null
  rm -f "$work/ids".*
  measure "$name" create LOAD_RUN="$name-create" LOAD_IDS_OUT="$work/ids"
  cat "$work/ids".* >"$work/$name.ids"
  measure "$name" get LOAD_IDS="$work/$name.ids"
  measure "$name" update LOAD_IDS="$work/$name.ids"
  # More sessions for delete, which uses each id once.
  rm -f "$work/ids".*
  wrk_run create "$DURATION" LOAD_RUN="$name-fill" LOAD_IDS_OUT="$work/ids" >/dev/null
  cat "$work/ids".* >>"$work/$name.ids"
  say "$name: $(wc -l <"$work/$name.ids") session ids for delete"
  measure "$name" delete LOAD_IDS="$work/$name.ids"
  drain_ends "$name"
  calibrate "$name"
  stop_server
}

# With STORES: one measured run, without Redis counts.
measure_store() {
  local store=$1 op=$2 line
  shift 2
  line=$(wrk_run "$op" "$DURATION" "$@")
  say "$store $op: $line"
  printf '%s\t%s\t%s\n' "$store" "$op" "$line" >>"$work/stores.tsv"
}

# run_store STORE: create, get and update without plugins on one backend;
# for the embedded store, its bytes on disk per session after the creates.
run_store() {
  local store=$1 port sessions bytes
  port=$(free_port)
  write_config "$work/$store.toml" "$port" no "$store"
  if [ "$store" = redis ]; then rcli FLUSHALL >/dev/null; fi
  say "$store: starting sessiond on 127.0.0.1:$port (CPU $SERVER_CPU; no plugins)"
  start_server "$work/$store.toml" "$port"
  rm -f "$work/ids".* "$work/warm-ids".*
  wrk_run create "$WARMUP" LOAD_RUN="$store-warmup" LOAD_IDS_OUT="$work/warm-ids" >/dev/null
  measure_store "$store" create LOAD_RUN="$store-create" LOAD_IDS_OUT="$work/ids"
  cat "$work/ids".* >"$work/$store.ids"
  if [ "$store" = embedded ]; then
    # Every session the warm-up and the create run made, all idle now.
    sessions=$(cat "$work/warm-ids".* "$work/ids".* 2>/dev/null | wc -l)
    bytes=$(du -s -B1 "$work/data-$store" | cut -f1)
    say "$store: $bytes bytes on disk for $sessions sessions"
    printf '%s\t%s\t%s\n' "$store" "$bytes" "$sessions" >>"$work/disk.tsv"
  fi
  measure_store "$store" get LOAD_IDS="$work/$store.ids"
  measure_store "$store" update LOAD_IDS="$work/$store.ids"
  stop_server
}

# The report of the STORES runs.
report_stores() {
  touch "$work/disk.tsv"
  mkdir -p "$root/target/load"
  python3 - "$work/stores.tsv" "$work/disk.tsv" "$DURATION" "$CONNECTIONS" "$THREADS" \
    "$SERVER_CPU" "$LOAD_CPU" "$LOG" "$EMBEDDED_DURABILITY" <<'EOF' | tee "$root/target/load/report.md"
import sys

results, disk = sys.argv[1:3]
duration, connections, threads, server_cpu, load_cpu, log, durability = sys.argv[3:10]
print("## sessiond HTTP load per store (no plugins)\n")
print(f"wrk -t{threads} -c{connections} -d{duration}s; sessiond on CPU {server_cpu}, "
      f"wrk (and redis-server) on CPU {load_cpu}; RUST_LOG={log}; "
      f"embedded durability {durability}.\n")
print("| store | op | req/s | p50 ms | p99 ms | non-2xx | socket errors |")
print("|---|---|---:|---:|---:|---:|---:|")
for line in open(results):
    store, op, result = line.rstrip("\n").split("\t")
    fields = dict(item.split("=") for item in result.split()[1:])
    rps = int(fields["requests"]) / (int(fields["duration_us"]) / 1e6)
    errors = sum(int(fields[k]) for k in ("connect", "read", "write", "timeout"))
    print(f"| {store} | {op} | {rps:,.0f} | {int(fields['p50_us']) / 1000:.2f} | "
          f"{int(fields['p99_us']) / 1000:.2f} | {int(fields['non2xx'])} | {errors} |")
print()
for line in open(disk):
    store, size, sessions = line.rstrip("\n").split("\t")
    per = int(size) / max(int(sessions), 1)
    print(f"{store}: {per:,.0f} bytes on disk per idle session after the create run "
          f"(du of the data directory, {int(size):,} bytes / {int(sessions):,} sessions)")
EOF
}

# The floor: FLOOR.md's create-session script (HSET 5 fields + PEXPIRE +
# ZADD) through EVALSHA, 50 clients.
floor() {
  rcli FLUSHALL >/dev/null
  local sha record csv
  sha=$(rcli SCRIPT LOAD "redis.call('HSET', KEYS[1], 'r', ARGV[1], 'v', ARGV[2], 'l', ARGV[3], 'a', ARGV[4], 'd', ARGV[5]) redis.call('PEXPIRE', KEYS[1], ARGV[6]) redis.call('ZADD', KEYS[2], ARGV[5], KEYS[1]) return 1")
  # A record-sized value (sessiond's record JSON is about this long); no
  # quotes or commas, which redis-benchmark's CSV output does not escape.
  record=$(python3 -c 'print("r" * 400)')
  csv=$(taskset -c "$SERVER_CPU" redis-benchmark -h 127.0.0.1 -p "$rport" -c 50 -n "$BENCH_REQUESTS" -r 1000000 --csv \
    EVALSHA "$sha" 2 "load:s:__rand_int__" "load:deadlines" "$record" 1 1700000000000 1700003600000 1700000900000 3660000)
  # "test","rps","avg_latency_ms","min","p50","p95","p99","max": rps is the
  # 7th field from the right.
  python3 -c 'import sys; print(sys.argv[1].strip().splitlines()[-1].split(",")[-7].strip("\""))' "$csv"
}

# run_contended NAME WITH_UPDATER: one session, every connection PATCHing
# it; the result line and the session's version afterwards.
run_contended() {
  local name=$1 with_updater=$2 port id line version
  port=$(free_port)
  write_config "$work/$name.toml" "$port" no
  if [ "$with_updater" = yes ]; then
    cat >>"$work/$name.toml" <<EOF

[[tenants.load.plugins]]
name = "updater"
path = "$plugins/updater.wasm"
EOF
  fi
  rcli FLUSHALL >/dev/null
  say "$name: starting sessiond on 127.0.0.1:$port (CPU $SERVER_CPU)"
  start_server "$work/$name.toml" "$port"
  id=$(curl -fsS -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d '{"data":{}}' "$base/v1/sessions" | grep -oE '"id":"[A-Za-z0-9_-]+"' | cut -d'"' -f4)
  echo "$id" >"$work/$name.ids"
  line=$(wrk_run contended "$DURATION" LOAD_IDS="$work/$name.ids")
  version=$(curl -fsS -H "Authorization: Bearer $KEY" "$base/v1/sessions/$id" |
    grep -oE '"version":[0-9]+' | cut -d: -f2)
  say "$name: $line version=$version"
  printf '%s\t%s\t%s\n' "$name" "$line" "$version" >>"$work/contended.tsv"
  stop_server
}

# The report of the CONTENDED runs.
report_contended() {
  mkdir -p "$root/target/load"
  python3 - "$work/contended.tsv" "$DURATION" "$CONNECTIONS" "$THREADS" \
    "$SERVER_CPU" "$LOAD_CPU" "$LOG" <<'EOF' | tee "$root/target/load/report.md"
import sys

results = sys.argv[1]
duration, connections, threads, server_cpu, load_cpu, log = sys.argv[2:8]
print("## Contended PATCH: one session, no If-Match (Redis store)\n")
print(f"wrk -t{threads} -c{connections} -d{duration}s; sessiond on CPU {server_cpu}, "
      f"redis-server and wrk on CPU {load_cpu}; RUST_LOG={log}.\n")
print("| path | writes/s | p50 ms | p99 ms | non-200 | socket errors | answered 200 | final version |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
paths = {"merge": "atomic merge in the store", "chain": "updater plugin, compare-and-set"}
for line in open(results):
    name, result, version = line.rstrip("\n").split("\t")
    fields = dict(item.split("=") for item in result.split()[1:])
    requests, non200 = int(fields["requests"]), int(fields["non2xx"])
    ok = requests - non200
    rps = ok / (int(fields["duration_us"]) / 1e6)
    errors = sum(int(fields[k]) for k in ("connect", "read", "write", "timeout"))
    print(f"| {paths.get(name, name)} | {rps:,.0f} | {int(fields['p50_us']) / 1000:.2f} | "
          f"{int(fields['p99_us']) / 1000:.2f} | {non200} | {errors} | {ok:,} | {version} |")
print()
print("writes/s: PATCHes answered 200 per second. The final version is 1 + every PATCH "
      "applied; it may exceed 1 + the 200s by the requests still in flight when wrk stopped.")
EOF
}

# ------------------------------------------------------------------ the runs

if [ -n "$CONTENDED" ]; then
  : >"$work/contended.tsv"
  run_contended merge no
  run_contended chain yes
  report_contended
  exit 0
fi

if [ -n "$STORES" ]; then
  for store in $STORES; do run_store "$store"; done
  report_stores
  exit 0
fi

say "floor: redis-benchmark create-session script, 50 clients, $BENCH_REQUESTS requests"
floor_before=$(floor)
say "floor: $floor_before req/s"
run_config no-plugins no
run_config plugins yes
floor_after=$(floor)
say "floor again: $floor_after req/s"

# ------------------------------------------------------------------ report

mkdir -p "$root/target/load"
python3 - "$results" "$work/roundtrips.tsv" "$floor_before" "$floor_after" \
  "$DURATION" "$CONNECTIONS" "$THREADS" "$SERVER_CPU" "$LOAD_CPU" "$LOG" <<'EOF' | tee "$root/target/load/report.md"
import sys

results, roundtrips, floor_before, floor_after = sys.argv[1:5]
duration, connections, threads, server_cpu, load_cpu, log = sys.argv[5:11]
floor_before, floor_after = float(floor_before), float(floor_after)
floor = (floor_before + floor_after) / 2

rt = {}
for line in open(roundtrips):
    config, op, value = line.rstrip("\n").split("\t")
    rt[(config, op)] = float(value)

rows = []
rate = {}
for line in open(results):
    config, op, result, counts = line.rstrip("\n").split("\t")
    fields = dict(item.split("=") for item in result.split()[1:])
    requests = int(fields["requests"])
    seconds = int(fields["duration_us"]) / 1e6
    rps = requests / seconds
    rate[(config, op)] = rps
    errors = sum(int(fields[k]) for k in ("connect", "read", "write", "timeout"))
    commands, scripts = (int(x) for x in counts.split())
    rows.append(
        f"| {config} | {op} | {rps:,.0f} | {int(fields['p50_us']) / 1000:.2f} | "
        f"{int(fields['p99_us']) / 1000:.2f} | {int(fields['non2xx'])} | {errors} | "
        f"{rt.get((config, op), float('nan')):.2f} | {commands / max(requests, 1):.2f} | "
        f"{scripts / max(requests, 1):.2f} |"
    )

print(f"## sessiond HTTP load (Redis store)\n")
print(f"wrk -t{threads} -c{connections} -d{duration}s; sessiond on CPU {server_cpu}, "
      f"redis-server and wrk on CPU {load_cpu}; RUST_LOG={log}.\n")
print("| plugins | op | req/s | p50 ms | p99 ms | non-2xx | socket errors | round trips/call | Redis cmds/call | scripts/call |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
print("\n".join(rows))
print()
print("round trips/call: commands sessiond sent per API call (EVALSHA = 1), counted with MONITOR "
      "over sequential calls after the run; Redis cmds/call: INFO commandstats over the run, "
      "including the commands scripts ran; scripts/call: EVALSHA + EVAL over the run.\n")
print(f"floor (redis-benchmark -c 50, create-session script via EVALSHA): "
      f"{floor_before:,.0f} req/s before, {floor_after:,.0f} req/s after; mean {floor:,.0f} req/s\n")
with_p = rate.get(("plugins", "create"), 0.0)
without = rate.get(("no-plugins", "create"), 0.0)
r1 = with_p / without if without else float("nan")
r2 = without / floor if floor else float("nan")
print("| ratio | value | target | |")
print("|---|---:|---:|---|")
print(f"| create with plugins / create without | {r1:.2f} | >= 0.8 | {'met' if r1 >= 0.8 else 'NOT met'} |")
print(f"| create without plugins / floor | {r2:.2f} | >= 0.4 | {'met' if r2 >= 0.4 else 'NOT met'} |")
EOF
# DELETE answers before the end hooks run: how long the backlog of end hooks
# the delete run queued took to finish after it.
while IFS=$'\t' read -r config left secs; do
  echo "end-hook backlog after the delete run ($config): queue empty ${secs} s later (jobs left: $left)"
done <"$work/drain.tsv" | tee -a "$root/target/load/report.md"
