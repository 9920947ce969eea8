#!/usr/bin/env bash
# The whole demo on a fresh clone, with embedded defaults: builds the three
# binaries, starts secure-environment and kms-api as separate processes
# (key set and SQLite under ./data, created on first start), runs
# client-example against them, then kms-wallet through generate → derive →
# address → sign → verify, then stops both. Exit status is the demo's.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --bin secure-environment --bin kms-api --bin client-example --bin kms-wallet
bin="${CARGO_TARGET_DIR:-target}/debug"
logs="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# Waits for a server's first stdout line, "listening on ADDR", and prints ADDR.
listening_addr() {
  local out="$1" pid="$2" name="$3"
  for _ in $(seq 1 300); do
    local addr
    addr="$(sed -n 's/^listening on //p' "$out" | head -n 1)"
    if [ -n "$addr" ]; then echo "$addr"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited during start-up; its log:" >&2; cat "$logs/$name.log" >&2; return 1
    fi
    sleep 0.1
  done
  echo "$name did not start within 30 s" >&2; return 1
}

# Free ports (port 0), so the demo never collides with something on 3000/3002.
"$bin/secure-environment" --listen 127.0.0.1:0 >"$logs/secure-environment.out" 2>"$logs/secure-environment.log" &
pids+=($!)
se_addr="$(listening_addr "$logs/secure-environment.out" "${pids[0]}" secure-environment)"

"$bin/kms-api" --listen 127.0.0.1:0 --secure-env-url "http://$se_addr" >"$logs/kms-api.out" 2>"$logs/kms-api.log" &
pids+=($!)
api_addr="$(listening_addr "$logs/kms-api.out" "${pids[1]}" kms-api)"

echo "secure-environment on $se_addr, kms-api on $api_addr (logs in $logs)"
fail() {
  echo "demo failed; server logs:" >&2
  tail -n 20 "$logs/secure-environment.log" "$logs/kms-api.log" >&2
  exit 1
}
"$bin/client-example" --api-url "http://$api_addr" "$@" || fail

# Keys that work: a wallet made inside the secure environment, an address
# from a derived (signed) public key, a signature, checked offline.
wallet() { "$bin/kms-wallet" --api-url "http://$api_addr" "$@"; }
echo
echo "HD wallet: generate → derive → address → sign → verify"
id="$(wallet --json generate --key-type bip39 | sed -n 's/.*"wallet_id":"\([^"]*\)".*/\1/p')" || fail
[ -n "$id" ] || fail
echo "1. generated bip39 wallet $id (24 words of entropy, never outside the secure environment)"
path="m/44'/60'/0'/0/0"
echo "2. derived $path:"
wallet derive --wallet "$id" --curve secp256k1 --path "$path" | sed 's/^/   /' || fail
echo "3. addresses of that key:"
echo "   EVM     $(wallet address --wallet "$id" --path "$path" --kind evm)" || fail
echo "   P2WPKH  $(wallet address --wallet "$id" --path "m/84'/0'/0'/0/0" --kind p2wpkh)  (m/84'/0'/0'/0/0)" || fail
echo "   P2TR    $(wallet address --wallet "$id" --path "m/86'/0'/0'/0/0" --kind p2tr --testnet)  (m/86'/0'/0'/0/0, testnet)" || fail
signed="$(wallet --json sign --wallet "$id" --path "$path" --algorithm ecdsa-secp256k1 --message "hello from the KMS" --hash eip191)" || fail
sig="$(echo "$signed" | sed -n 's/.*"signature":"\([^"]*\)".*/\1/p')"
pk="$(echo "$signed" | sed -n 's/.*"public_key":"\([^"]*\)".*/\1/p')"
echo "4. signed an EIP-191 message with ecdsa-secp256k1 (RFC 6979, low S): ${sig:0:16}…"
echo "5. verified offline: $(wallet verify --algorithm ecdsa-secp256k1 --public-key "$pk" --signature "$sig" --message "hello from the KMS" --hash eip191)" || fail
