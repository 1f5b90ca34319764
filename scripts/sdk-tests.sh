#!/usr/bin/env bash
# SDK conformance suite: drives a real deskfleet-server through the unchanged official
# Huawei Cloud Python SDKs (huaweicloudsdkworkspace / huaweicloudsdkiam), see tests/sdk/.
#
# Usage: scripts/sdk-tests.sh [pytest args...]
#   The web console's browser tests (test_console.py) run here too, in Debian's Chromium,
#   which this script installs when it is missing; screenshots go to
#   target/console-screenshots/.
#   DESKFLEET_SERVER_BIN  server binary (default: target/debug/deskfleet-server; build it
#                         first with `cargo build --workspace --bins`: the fleet tests also
#                         run deskfleet-guest and deskfleet-monitor from the same directory)
# The virtual environment lives in .venv and is reused; requirements are reinstalled only
# when tests/sdk/requirements.txt changes. The exit code is pytest's.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
REQS="$REPO/tests/sdk/requirements.txt"
STAMP="$VENV/.sdk-requirements.sha256"

SERVER_BIN="${DESKFLEET_SERVER_BIN:-$REPO/target/debug/deskfleet-server}"
case "$SERVER_BIN" in /*) ;; *) SERVER_BIN="$PWD/$SERVER_BIN" ;; esac
if [[ ! -f "$SERVER_BIN" || ! -x "$SERVER_BIN" ]]; then
  echo "sdk-tests: server binary not found or not executable: $SERVER_BIN" >&2
  echo "sdk-tests: build it with 'cargo build --workspace --bins' or set DESKFLEET_SERVER_BIN" >&2
  exit 2
fi
for sibling in deskfleet-guest deskfleet-monitor deskfleet-fleet-sim; do
  if [[ ! -x "$(dirname "$SERVER_BIN")/$sibling" ]]; then
    echo "sdk-tests: $sibling not found beside $SERVER_BIN (the fleet tests run it)" >&2
    echo "sdk-tests: build the binaries with 'cargo build --workspace --bins'" >&2
    exit 2
  fi
done

if ! command -v python3 >/dev/null 2>&1; then
  echo "sdk-tests: python3 is required" >&2
  exit 2
fi

# Installs Debian packages (as root, or through sudo).
apt_install() {
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
      echo "sdk-tests: not root and no sudo: install $* first" >&2
      exit 2
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "sdk-tests: no apt-get: install $* first" >&2
    exit 2
  fi
  ${sudo[@]+"${sudo[@]}"} apt-get update -qq
  DEBIAN_FRONTEND=noninteractive ${sudo[@]+"${sudo[@]}"} apt-get install -y -qq "$@" >/dev/null
}

# `python3 -m venv` needs ensurepip, which Debian ships separately (python3-venv).
ensure_venv_support() {
  if python3 -c 'import ensurepip' >/dev/null 2>&1; then
    return 0
  fi
  echo "sdk-tests: python3 lacks ensurepip; installing Debian's python3-venv" >&2
  apt_install python3-venv
}

# The console tests (test_console.py) drive Debian's Chromium headless through Playwright;
# Playwright never downloads a browser of its own. DESKFLEET_CHROMIUM names another one.
ensure_chromium() {
  local chromium="${DESKFLEET_CHROMIUM:-/usr/bin/chromium}"
  if [[ -x "$chromium" ]]; then
    return 0
  fi
  echo "sdk-tests: $chromium not found; installing Debian's chromium" >&2
  apt_install chromium
}

# The replica tests (test_replicas.py, PostgreSQL only) put HAProxy in front of three
# servers; it runs as the test's own process, never as a system service.
ensure_haproxy() {
  if [[ -z "${TEST_DATABASE_URL:-}" ]] || command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]]; then
    return 0
  fi
  echo "sdk-tests: haproxy not found; installing Debian's haproxy" >&2
  apt_install haproxy
}
ensure_chromium
ensure_haproxy

if [[ ! -x "$VENV/bin/python" || ! -x "$VENV/bin/pip" ]]; then
  ensure_venv_support
  rm -rf "$VENV"
  python3 -m venv "$VENV"
fi

want="$( (sha256sum "$REQS"; "$VENV/bin/python" -V) 2>&1 | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
  echo "sdk-tests: installing $(basename "$REQS") into $VENV" >&2
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore "$VENV/bin/pip" install --quiet -r "$REQS"
  echo "$want" > "$STAMP"
fi

cd "$REPO"
export DESKFLEET_SERVER_BIN="$SERVER_BIN"
export PYTHONDONTWRITEBYTECODE=1
exec "$VENV/bin/python" -m pytest tests/sdk -q -p no:cacheprovider "$@"
