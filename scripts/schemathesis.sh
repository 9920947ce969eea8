#!/usr/bin/env bash
# Schemathesis against kms-api's own OpenAPI document (/v1/openapi.json):
# a bounded run that must see zero 5xx responses and zero responses that
# break the documented schema, status codes, content types or headers, and
# must find every schema-invalid request rejected. Run by .ci/run; for a
# longer run: MAX_EXAMPLES=1000 ./scripts/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check "schemathesis==4.32.5"
export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"

cargo build --quiet --bin secure-environment --bin kms-api --bin client-example
bin="${CARGO_TARGET_DIR:-target}/debug"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

listening_addr() {
  for _ in $(seq 1 300); do
    addr="$(sed -n 's/^listening on //p' "$1" | head -n 1)"
    if [ -n "$addr" ]; then echo "$addr"; return 0; fi
    sleep 0.1
  done
  echo "server did not start: $(cat "$2")" >&2; return 1
}

"$bin/secure-environment" --listen 127.0.0.1:0 --data-dir "$work/se" >"$work/se.out" 2>"$work/se.log" &
pids+=($!)
se="$(listening_addr "$work/se.out" "$work/se.log")"
"$bin/kms-api" --listen 127.0.0.1:0 --secure-env-url "http://$se" --data-dir "$work/api" \
  --max-in-flight-per-client 256 --max-connections-per-client 256 >"$work/api.out" 2>"$work/api.log" &
pids+=($!)
api="$(listening_addr "$work/api.out" "$work/api.log")"
# A few real wallets and sessions, so not every lookup is a 404.
"$bin/client-example" --api-url "http://$api" --identity-public-key "$(cat "$work/se/identity.pub")" >/dev/null

cd "$work"
schemathesis run "http://$api/v1/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection \
  --max-examples "${MAX_EXAMPLES:-50}" \
  --seed "${SEED:-20261123}" \
  --request-timeout 30
