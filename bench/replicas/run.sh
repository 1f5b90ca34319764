#!/usr/bin/env bash
# Failover of one replica out of three, on one PostgreSQL database behind HAProxy, with
# 1,000 simulated desktops installing: SIGKILL, then SIGTERM (a drain). Runs the suite's
# own scenario (tests/sdk/test_replicas.py) on release binaries, larger, and appends the
# figures it measures to bench/replicas/RESULTS.md.
#
# Usage: PG_URL=postgres://postgres@127.0.0.1:5432/test DESKTOPS=1000 bench/replicas/run.sh
# Needs PostgreSQL (a database it may create others beside) and haproxy (installed by
# scripts/sdk-tests.sh when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
DESKTOPS="${DESKTOPS:-1000}"
RESULTS=bench/replicas/RESULTS.md

cargo build --release --workspace --bins --locked
figures=$(mktemp)
TEST_DATABASE_URL="$PG_URL" DESKFLEET_FAILOVER_DESKTOPS="$DESKTOPS" DESKFLEET_FAILOVER_FIGURES="$figures" \
  DESKFLEET_SERVER_BIN="$PWD/target/release/deskfleet-server" \
  scripts/sdk-tests.sh -k "sigkill or sigterm"

{
  echo
  echo "## $(date -u +%Y-%m-%dT%H:%MZ): $DESKTOPS desktops, 3 replicas, $(nproc) cores, release build"
  echo
  echo "| signal | desktops on the replica | reconnected after | jobs ended after the signal | install, start to end | reconnects | offers | downloads | installs resumed elsewhere | replica exit |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  python3 - "$figures" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    f = json.loads(line)
    print(f"| {f['how']} | {f['on_the_replica']} of {f['desktops']} | {f['reconnect_s']} s | "
          f"{f['finish_after_hit_s']} s | {f['install_total_s']} s | {f['reconnects']} | {f['offers']} | {f['downloads']} | "
          f"{f['resumed']} | {f['exit_code']} |")
PY
} >> "$RESULTS"
rm -f "$figures"
tail -n 8 "$RESULTS"
