#!/usr/bin/env bash
# Console benchmark: page weight and time to interactive of the overview and the desktops
# page with 10,000 desktops (SQLite, the embedded default), measured in Debian's Chromium headless through
# Playwright (the test venv, .venv), on loopback, for the first page, a filtered page and
# a sorted page.
#
#   bench/console/run.sh             # release build; writes bench/console/RESULTS.md
#   PROFILE=dev bench/console/run.sh # debug binaries (quicker to build, slower to serve)
#   DESKTOPS=20000 RUNS=7 bench/console/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

DESKTOPS=${DESKTOPS:-10000}
RUNS=${RUNS:-5}
PROFILE=${PROFILE:-release}
RESULTS=${RESULTS:-bench/console/RESULTS.md}
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

# The whole workspace's binaries, as the tests build them: building one package alone
# would unify features differently and rebuild every dependency.
cargo build --profile "$PROFILE" --locked --workspace --bins
BIN=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")

# The venv and Chromium as the test suite installs them (nothing is run: --collect-only).
DESKFLEET_SERVER_BIN="$BIN/deskfleet-server" scripts/sdk-tests.sh --collect-only -q tests/sdk/test_console.py >/dev/null \
  || { test -x "$BIN/deskfleet-guest" || echo "bench: build the guest too, or ignore the sdk-tests binary check" >&2; }

wait_file() { for _ in $(seq 1 300); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; return 1; }

DATA="$OUT/data"
mkdir -p "$DATA"
cat > "$OUT/config.toml" <<TOML
[throttle]
enabled = false
TOML
"$BIN/deskfleet-server" --data-dir "$DATA" --listen 127.0.0.1:0 --config "$OUT/config.toml" > "$OUT/server.log" 2>&1 &
wait_file "$DATA/listen.addr"
wait_file "$DATA/bootstrap.json"
PROJECT=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["project_id"])' "$DATA/bootstrap.json")

python3 - "$DESKTOPS" > "$OUT/desktops.json" <<'PY'
import json, sys
n = int(sys.argv[1])
sites = ["paris", "lyon", "berlin", "madrid"]
print(json.dumps([{"computer_name": f"wks-{i:05d}", "ip_address": f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}",
                   "os_type": "Linux", "tags": [{"key": "site", "value": sites[i % 4]}]} for i in range(n)]))
PY
"$BIN/deskfleet-server" --data-dir "$DATA" admin desktops import --project "$PROJECT" "$OUT/desktops.json" > /dev/null
echo "bench: $DESKTOPS desktops imported" >&2

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
.venv/bin/python bench/console/measure.py "$DATA" "$RUNS" > "$OUT/rows.md"

{
  echo "# Console: the overview and the desktops page with $DESKTOPS desktops"
  echo
  echo "Measured by \`bench/console/run.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores ($(uname -m)),"
  echo "server built with profile \`$PROFILE\`, SQLite in a temporary data directory, HTTPS on"
  echo "loopback. Browser: $(/usr/bin/chromium --version 2>/dev/null | head -1 | tr -cd '[:print:]'), headless, driven by"
  echo "Playwright; the median of $RUNS loads of each page in a fresh tab of a signed-in"
  echo "browser (the first load, which fills the cache, is not counted). Load average when the"
  echo "measures began: $LOAD."
  echo
  echo "- *HTML*: bytes of the page's document (uncompressed: the server does not compress)."
  echo "- *CSS+JS*: bytes of the stylesheet and the script; cached for a year once loaded"
  echo "  (their URL carries their hash), so a later page costs only its HTML."
  echo "- *TTI*: time to interactive as navigation timing gives it, \`domInteractive\` from"
  echo "  the start of the navigation (no script runs before the page is usable: the script"
  echo "  is \`defer\`); *load* is \`loadEventEnd\`; *server* is \`responseStart - requestStart\`."
  echo
  cat "$OUT/rows.md"
} > "$RESULTS"
cat "$RESULTS"
