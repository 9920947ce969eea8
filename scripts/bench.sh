#!/usr/bin/env bash
# The performance benchmark (docs/performance.md): release builds, the
# crypto-only limit of each operation in process, then load against the
# real binaries on loopback at fixed concurrency levels, and the headline
# ratio of end-to-end export throughput to the limit on the same cores.
#   SECONDS_PER_LEVEL=10 RUNS=3 CONCURRENCY=1,8,64 ./scripts/bench.sh
# OPS picks the load operations (default: export import data-key-decrypt).
# Results (JSON lines) go to target/bench/results.jsonl; the table to stdout.
# Not a test: nothing in `cargo test` depends on these numbers.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${SECONDS_PER_LEVEL:-10}"
runs="${RUNS:-3}"
levels="${CONCURRENCY:-1,8,64}"
cargo build --release --quiet --bin secure-environment --bin kms-api --bin kms-bench
bin="${CARGO_TARGET_DIR:-target}/release"
# SERVER_BIN_DIR: run other builds of the two servers (a before/after
# comparison) under the same load generator.
server_bin="${SERVER_BIN_DIR:-$bin}"
out="${CARGO_TARGET_DIR:-target}/bench"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

addr_of() {
  for _ in $(seq 1 300); do
    local a; a="$(sed -n 's/^listening on //p' "$1" | head -n 1)"
    if [ -n "$a" ]; then echo "$a"; return 0; fi
    sleep 0.1
  done
  echo "server did not start: $1" >&2; return 1
}

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "== limit (crypto only, one thread, in process)"
"$bin/kms-bench" limit --seconds 2 --runs "$runs" --json-out "$results"

RUST_LOG=warn "$server_bin/secure-environment" --listen 127.0.0.1:0 --data-dir "$work/se" \
  --max-in-flight 4096 --max-in-flight-per-client 4096 --max-connections-per-client 4096 \
  >"$work/se.out" 2>"$work/se.log" &
pids+=($!); se_pid=$!
se="$(addr_of "$work/se.out")"
RUST_LOG=warn "$server_bin/kms-api" --listen 127.0.0.1:0 --secure-env-url "http://$se" --data-dir "$work/api" \
  --max-in-flight 4096 --max-in-flight-per-client 4096 --max-connections-per-client 4096 \
  >"$work/api.out" 2>"$work/api.log" &
pids+=($!); api_pid=$!
api="$(addr_of "$work/api.out")"

for op in ${OPS:-export import data-key-decrypt}; do
  echo "== load: $op"
  "$bin/kms-bench" load --api-url "http://$api" --op "$op" --concurrency "$levels" \
    --seconds "$secs" --runs "$runs" --pid "se=$se_pid" --pid "api=$api_pid" --json-out "$results"
done

python3 - "$results" "$(nproc)" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cores = int(sys.argv[2])
limit = {r["op"]: r["ops_per_s"]["median"] for r in rows if r["bench"] == "limit"}
def best(op):
    xs = [r["ops_per_s"]["median"] for r in rows if r["bench"] == "load" and r["op"] == op]
    return max(xs) if xs else 0.0
exp = best("Export")
print(f"== headline: end-to-end export {exp:.0f}/s = {100*exp/(limit['export']*cores):.0f} % of the crypto-only export limit on {cores} cores ({limit['export']*cores:.0f}/s)")
print(f"   import (start + complete): {best('Import'):.0f}/s; data-key decrypt: {best('DataKeyDecrypt'):.0f}/s")
PY
