#!/usr/bin/env bash
# Test services for the root-key provider tests
# (crates/secure-environment/tests/root_providers.rs):
#   - a SoftHSM2 token (PKCS#11), label kms-test, fixed test PINs;
#   - moto_server, an AWS KMS emulator on a free loopback port, with one
#     symmetric key.
# Meant to be *sourced* (`. scripts/test-services.sh`), so that the KMS_TEST_*
# variables reach the tests. Idempotent: re-sourcing reuses the token and a
# running moto_server. A service that cannot be set up prints a WARNING and
# leaves its variables unset, and its tests print SKIPPED.
# State goes under ${KMS_TEST_SERVICES_DIR:-$PWD/target/test-services};
# stop moto_server with: kill "$(cat "$KMS_TEST_SERVICES_DIR/moto.pid")".

set -euo pipefail

KMS_TEST_SERVICES_DIR="${KMS_TEST_SERVICES_DIR:-$PWD/target/test-services}"
mkdir -p "$KMS_TEST_SERVICES_DIR"
KMS_TEST_SERVICES_DIR="$(cd "$KMS_TEST_SERVICES_DIR" && pwd)"
export KMS_TEST_SERVICES_DIR

unset KMS_TEST_PKCS11_MODULE KMS_TEST_PKCS11_TOKEN_LABEL KMS_TEST_PKCS11_PIN
unset KMS_TEST_AWS_KMS_ENDPOINT KMS_TEST_AWS_KMS_KEY_ID

_kts_sudo() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ---------------------------------------------------------------- SoftHSM2
_kts_softhsm() {
  local token_label=kms-test user_pin=1234 so_pin=123456 dir module="" m
  if ! command -v softhsm2-util >/dev/null 2>&1; then
    echo "test-services: installing softhsm2" >&2
    { _kts_sudo apt-get install -y -qq softhsm2 >/dev/null 2>&1 ||
      { _kts_sudo apt-get update -qq >/dev/null 2>&1 &&
        _kts_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null 2>&1; }; } ||
      { echo "WARNING: test-services: could not install softhsm2 (apt-get); PKCS#11 tests will be skipped" >&2; return 0; }
  fi
  for m in /usr/lib/softhsm/libsofthsm2.so \
           /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
           /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so \
           /usr/local/lib/softhsm/libsofthsm2.so; do
    if [ -f "$m" ]; then module="$m"; break; fi
  done
  if [ -z "$module" ]; then
    echo "WARNING: test-services: libsofthsm2.so not found; PKCS#11 tests will be skipped" >&2
    return 0
  fi
  dir="$KMS_TEST_SERVICES_DIR/softhsm"
  mkdir -p "$dir/tokens"
  printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
    "$dir/tokens" >"$dir/softhsm2.conf"
  export SOFTHSM2_CONF="$dir/softhsm2.conf"
  local slots
  slots="$(softhsm2-util --show-slots 2>/dev/null || true)"
  if ! grep -Eq "Label: +$token_label *\$" <<<"$slots"; then
    if ! softhsm2-util --init-token --free --label "$token_label" \
           --so-pin "$so_pin" --pin "$user_pin" >"$dir/init.log" 2>&1; then
      echo "WARNING: test-services: softhsm2-util --init-token failed (see $dir/init.log); PKCS#11 tests will be skipped" >&2
      return 0
    fi
  fi
  export KMS_TEST_PKCS11_MODULE="$module"
  export KMS_TEST_PKCS11_TOKEN_LABEL="$token_label"
  export KMS_TEST_PKCS11_PIN="$user_pin"
  echo "test-services: SoftHSM2 token '$token_label' ($module, SOFTHSM2_CONF=$SOFTHSM2_CONF)" >&2
}

# ------------------------------------------------------------- moto (KMS)
_kts_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

_kts_answers() { # url
  python3 - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=2)
except urllib.error.HTTPError:
    pass  # it answered
PY
}

_kts_moto() {
  local dir="$KMS_TEST_SERVICES_DIR/moto" port endpoint pid i key_id
  mkdir -p "$dir"
  if ! command -v moto_server >/dev/null 2>&1; then
    echo "test-services: installing moto[server]" >&2
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]" >"$dir/pip.log" 2>&1 ||
      { echo "WARNING: test-services: pip install moto[server] failed (see $dir/pip.log); AWS KMS tests will be skipped" >&2; return 0; }
    hash -r
    if ! command -v moto_server >/dev/null 2>&1; then
      PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
      export PATH
    fi
    if ! command -v moto_server >/dev/null 2>&1; then
      echo "WARNING: test-services: moto_server not on PATH after installing moto; AWS KMS tests will be skipped" >&2
      return 0
    fi
  fi

  # Reuse a running server started by an earlier sourcing.
  endpoint=""
  if [ -f "$dir/moto.pid" ] && [ -f "$dir/endpoint" ]; then
    pid="$(cat "$dir/moto.pid")"
    if kill -0 "$pid" 2>/dev/null && _kts_answers "$(cat "$dir/endpoint")"; then
      endpoint="$(cat "$dir/endpoint")"
    fi
  fi
  if [ -z "$endpoint" ]; then
    port="$(_kts_free_port)"
    endpoint="http://127.0.0.1:$port"
    nohup moto_server -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 </dev/null &
    pid=$!
    disown "$pid" 2>/dev/null || true
    echo "$pid" >"$dir/moto.pid"
    echo "$endpoint" >"$dir/endpoint"
    rm -f "$dir/key_id"
    for i in $(seq 1 100); do
      if _kts_answers "$endpoint"; then break; fi
      if ! kill -0 "$pid" 2>/dev/null || [ "$i" -eq 100 ]; then
        echo "WARNING: test-services: moto_server did not start (see $dir/moto.log); AWS KMS tests will be skipped" >&2
        kill "$pid" 2>/dev/null || true
        rm -f "$dir/moto.pid" "$dir/endpoint"
        return 0
      fi
      sleep 0.2
    done
  fi

  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
  unset AWS_SESSION_TOKEN AWS_PROFILE
  if [ ! -s "$dir/key_id" ]; then
    if ! python3 - "$endpoint" >"$dir/key_id" 2>"$dir/create-key.log" <<'PY'
import sys, boto3
kms = boto3.client("kms", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
meta = kms.create_key(Description="kms test root key", KeySpec="SYMMETRIC_DEFAULT",
                      KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
print(meta["KeyId"])
PY
    then
      rm -f "$dir/key_id"
      echo "WARNING: test-services: could not create a KMS key in moto (see $dir/create-key.log); AWS KMS tests will be skipped" >&2
      return 0
    fi
  fi
  export KMS_TEST_AWS_KMS_ENDPOINT="$endpoint"
  KMS_TEST_AWS_KMS_KEY_ID="$(cat "$dir/key_id")"
  export KMS_TEST_AWS_KMS_KEY_ID
  echo "test-services: moto_server at $endpoint (pid $(cat "$dir/moto.pid")), KMS key $KMS_TEST_AWS_KMS_KEY_ID" >&2
}

_kts_softhsm || echo "WARNING: test-services: SoftHSM2 setup failed; PKCS#11 tests will be skipped" >&2
_kts_moto || echo "WARNING: test-services: moto setup failed; AWS KMS tests will be skipped" >&2
unset -f _kts_sudo _kts_softhsm _kts_free_port _kts_answers _kts_moto
