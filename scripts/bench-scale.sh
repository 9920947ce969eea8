#!/usr/bin/env bash
# Scale (issue 5): export latency with 1k wallets and with SCALE_LARGE
# wallets in kms-api's SQLite, and the bytes each wallet costs on disk.
#   SCALE_LARGE=1000000 SECONDS_PER_LEVEL=10 RUNS=3 ./scripts/bench-scale.sh
# The 1k wallets are real imports through the API; the rest are filler rows
# written straight into the wallets table (see crates/bench/src/scale.rs).
# Results (JSON lines) are appended to target/bench/results.jsonl (after
# whatever scripts/bench.sh wrote); the table goes to stdout.
# Not a test: nothing in `cargo test` depends on these numbers.
set -euo pipefail
cd "$(dirname "$0")/.."

large="${SCALE_LARGE:-1000000}"
small="${SCALE_SMALL:-1000}"
secs="${SECONDS_PER_LEVEL:-10}"
runs="${RUNS:-3}"
levels="${CONCURRENCY:-1,8}"
cargo build --release --quiet --bin secure-environment --bin kms-api --bin kms-bench
bin="${CARGO_TARGET_DIR:-target}/release"
server_bin="${SERVER_BIN_DIR:-$bin}"
out="${CARGO_TARGET_DIR:-target}/bench"
mkdir -p "$out"
results="$out/results.jsonl"
# SCALE_TMPDIR: where the database goes (1M wallets take a few hundred MB).
work="$(mktemp -d "${SCALE_TMPDIR:-${TMPDIR:-/tmp}}/bench-scale.XXXXXX")"
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

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/^Mem:/{print $2}') GiB RAM; db in $work"

# Two identical stacks (secure environment + kms-api, each its own data dir):
# "small" keeps the 1k real wallets, "large" gets 1k real wallets of its own
# plus filler up to SCALE_LARGE, and kms-bench measures the two in
# alternation so that a busy (shared) machine weighs on both alike.
# SCALE_ONE_STACK=1: one stack, measured before and after the fill instead.
start_stack() { # NAME -> sets api_<NAME>
  RUST_LOG=warn "$server_bin/secure-environment" --listen 127.0.0.1:0 --data-dir "$work/$1-se" \
    --max-in-flight 4096 --max-in-flight-per-client 4096 --max-connections-per-client 4096 \
    >"$work/$1-se.out" 2>"$work/$1-se.log" &
  pids+=($!)
  local se; se="$(addr_of "$work/$1-se.out")"
  RUST_LOG=warn "$server_bin/kms-api" --listen 127.0.0.1:0 --secure-env-url "http://$se" --data-dir "$work/$1-api" \
    --max-in-flight 4096 --max-in-flight-per-client 4096 --max-connections-per-client 4096 \
    >"$work/$1-api.out" 2>"$work/$1-api.log" &
  pids+=($!)
  printf -v "api_$1" '%s' "$(addr_of "$work/$1-api.out")"
}
start_stack small
second=()
if [ "${SCALE_ONE_STACK:-0}" != 1 ]; then
  start_stack large
  second=(--large-api-url "http://$api_large" --large-db "$work/large-api/kms.sqlite")
fi

start_line=$(( $( [ -f "$results" ] && wc -l <"$results" || echo 0 ) + 1 ))
"$bin/kms-bench" scale --api-url "http://$api_small" --db "$work/small-api/kms.sqlite" "${second[@]}" \
  --small "$small" --large "$large" --concurrency "$levels" \
  --seconds "$secs" --runs "$runs" --json-out "$results"

for log in "$work"/*-api.log; do
  if [ -s "$log" ]; then echo "== $(basename "$log") (warnings):"; tail -n 5 "$log"; fi
done

python3 - "$results" "$start_line" <<'PY2'
import json, sys
lines = open(sys.argv[1]).read().splitlines()[int(sys.argv[2]) - 1:]
rows = [json.loads(l) for l in lines if l.strip()]
rows = [r for r in rows if r.get("bench") == "scale"]
print("== scale table (medians over runs)")
print(f"{'wallets':>9} {'c':>3} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'B/wallet':>9} {'row+idx B':>9} {'db MiB':>8}")
for r in rows:
    print(f"{r['wallets']:>9} {r['concurrency']:>3} {r['ops_per_s']['median']:>8.0f} {r['p50_ms']['median']:>8.2f} "
          f"{r['p99_ms']['median']:>8.2f} {r['p999_ms']['median']:>9.2f} {r['bytes_per_wallet']:>9.0f} "
          f"{r['row_and_index_bytes_per_wallet']:>9.0f} {r['db_bytes']/1048576:>8.1f}")
PY2
