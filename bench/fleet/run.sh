#!/usr/bin/env bash
# Fleet benchmark: N simulated desktops (deskfleet-fleet-sim) hold real OpAMP WebSocket
# connections to one server; then the agent is installed on all of them through the
# signed API in jobs of 100. Each simulated desktop downloads the real signed package and
# verifies its SHA-256 and ed25519 signature before it reports the install. Everything is
# https/wss as by default: the simulator pins the server's CA by the enrollment token's
# fingerprint, as a guest given only the URL and the token does; the install driver
# trusts DATA_DIR/ca.pem.
#
# Then the upgrade run: a second version of the monitor is published, and every desktop is
# upgraded to it through BatchInstallAgent with rollout control (MAX_CONCURRENCY, default
# 10% of each job's 100 desktops; MAX_ERRORS, default 5%), while FAIL_SHARE (default 0.1)
# of the simulated desktops fail their upgrade and report the guest's rollback.
#
#   bench/fleet/run.sh                       # 10000 desktops on SQLite, writes RESULTS.md
#   DESKTOPS=2000 bench/fleet/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

DESKTOPS=${DESKTOPS:-10000}
CONNECT_RATE=${CONNECT_RATE:-2000}
RESULTS=${RESULTS:-bench/fleet/RESULTS.md}
MAX_CONCURRENCY=${MAX_CONCURRENCY:-10%}
MAX_ERRORS=${MAX_ERRORS:-5%}
FAIL_SHARE=${FAIL_SHARE:-0.1}
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

# Both ends hold one descriptor per desktop, and more while downloading.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# PROFILE=dev: a quick check of the script itself with debug binaries (no figures).
PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" --locked -p deskfleet-server -p deskfleet-monitor -p deskfleet-fleet-sim --bins
cargo build --profile "$PROFILE" --locked -p deskfleet-client --examples
BIN=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")

cat > "$OUT/settings.toml" <<TOML
[throttle]
enabled = false
[jobs]
delivery_timeout_ms = 300000
execution_timeout_ms = 300000
[fleet]
schedule_interval_ms = 200
max_new_connections_per_sec = 5000
TOML

"$BIN/deskfleet-server" --data-dir "$OUT" --listen 127.0.0.1:0 --config "$OUT/settings.toml" \
  > "$OUT/server.out" 2> "$OUT/server.log" &
server=$!
for _ in $(seq 1 300); do [ -s "$OUT/listen.addr" ] && break; sleep 0.1; done
endpoint=$(cat "$OUT/endpoint.url") # written before listen.addr
project=$(json "$OUT/bootstrap.json" project_id)
ak=$(json "$OUT/bootstrap.json" access_key)
sk=$(json "$OUT/bootstrap.json" secret_key)
token=$("$BIN/deskfleet-server" --data-dir "$OUT" admin enrollment-tokens create --project "$project" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["enrollment_token"])')
package_size=$(stat -c %s "$BIN/deskfleet-monitor")

hz=$(getconf CLK_TCK)

t0=$(date +%s.%N)
DESKFLEET_ENROLLMENT_TOKEN="$token" "$BIN/deskfleet-fleet-sim" --server "$endpoint" \
  --trusted-key "$OUT/package-signing.pub" --desktops "$DESKTOPS" --connect-rate "$CONNECT_RATE" \
  --fail-upgrade-share "$FAIL_SHARE" \
  > "$OUT/sim.out" 2> "$OUT/sim.log" &
sim=$!
for _ in $(seq 1 6000); do grep -q '"event":"connected"' "$OUT/sim.out" 2>/dev/null && break; sleep 0.1; done
grep -q '"event":"connected"' "$OUT/sim.out" || { echo "desktops did not all connect" >&2; tail "$OUT/sim.log" >&2; exit 1; }
t1=$(date +%s.%N)
sleep 2 # let the connection burst settle before reading memory
connected_rss=$(rss_kib "$server")
connect_line=$(grep '"event":"connected"' "$OUT/sim.out")

cpu0=$(cpu_ticks "$server")
install=$(DESKFLEET_CA_CERT="$OUT/ca.pem" "$BIN/examples/install_all" "$endpoint" "$project" "$ak" "$sk" 100 8)
cpu1=$(cpu_ticks "$server")
install_rss=$(rss_kib "$server")
peak_rss=$(hwm_kib "$server")

# The upgrade run: version 0.2.0 of the same binary, published as an archive.
python3 - "$BIN/deskfleet-monitor" "$OUT/monitor-0.2.0.tar.gz" <<'PY'
import io, json, sys, tarfile
binary, out = sys.argv[1], sys.argv[2]
with tarfile.open(out, "w:gz") as tar:
    tar.add(binary, arcname="deskfleet-monitor")
    manifest = json.dumps({"name": "deskfleet-monitor", "version": "0.2.0",
                           "entrypoint": "deskfleet-monitor"}).encode()
    info = tarfile.TarInfo("manifest.json"); info.size = len(manifest); info.mode = 0o644
    tar.addfile(info, io.BytesIO(manifest))
PY
"$BIN/deskfleet-server" --data-dir "$OUT" --config "$OUT/settings.toml" admin packages publish \
  "$OUT/monitor-0.2.0.tar.gz" --version 0.2.0 > /dev/null
cpu2=$(cpu_ticks "$server")
upgrade=$(MAX_CONCURRENCY="$MAX_CONCURRENCY" MAX_ERRORS="$MAX_ERRORS" DESKFLEET_CA_CERT="$OUT/ca.pem" \
  "$BIN/examples/install_all" "$endpoint" "$project" "$ak" "$sk" 100 8)
cpu3=$(cpu_ticks "$server")
upgrade_rss=$(rss_kib "$server")
upgrade_peak=$(hwm_kib "$server")
sim_rss=$(rss_kib "$sim")
kill "$sim" 2>/dev/null || true
kill "$server"; wait "$server" 2>/dev/null || true

python3 - "$RESULTS" <<PY
import json, sys, datetime, os, platform
install = json.loads('''$install''')
upgrade = json.loads('''$upgrade''')
upgrade_cpu = ($cpu3 - $cpu2) / $hz
stopped = upgrade["failure_codes"].get("WKS.00990020", 0)
upgrade_failed = upgrade["failed"] - stopped
connected = json.loads('''$connect_line''')
connect_secs = $t1 - $t0
cpu_secs = ($cpu1 - $cpu0) / $hz
total = install["total_secs"]
rows = [
    ("simulated desktops connected", f"{connected['connected']} (enrolled {connected['enrolled']})", "10,000", "yes" if connected['enrolled'] >= 10000 else "no"),
    ("time to connect and enroll them all", f"{connect_secs:.1f} s at up to $CONNECT_RATE new connections/s", "", ""),
    ("server resident memory, all connected and idle", f"{$connected_rss/1024:.1f} MiB", "< 300 MiB", "yes" if $connected_rss/1024 < 300 else "no"),
    ("server resident memory after the install", f"{$install_rss/1024:.1f} MiB (peak {$peak_rss/1024:.1f} MiB)", "< 300 MiB", "yes" if $peak_rss/1024 < 300 else "no"),
    ("install on every desktop (jobs of 100)", f"{total:.1f} s, {install['success']} succeeded, {install['failed']} failed {install['failure_codes']}", "< 60 s", "yes" if total < 60 and install['failed'] == 0 else "no"),
    ("desktops per second", f"{install['desktops_per_sec']:.0f}", "", ""),
    ("server CPU during the install", f"{cpu_secs:.1f} s of CPU in {total:.1f} s = {100*cpu_secs/total:.0f} % of one core", "", ""),
    ("packages downloaded and verified by the simulated desktops", f"{install['success']} x {int($package_size)/1024:.0f} KiB", "", ""),
    ("load generator resident memory", f"{$sim_rss/1024:.1f} MiB", "", ""),
]
with open(sys.argv[1], "w") as f:
    f.write(f"""# Fleet benchmark results

Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC by \`bench/fleet/run.sh\` (DESKTOPS=$DESKTOPS) on a
{os.cpu_count()}-core machine (Linux {platform.release()}), release build, SQLite (WAL,
\`synchronous=FULL\`), everything on loopback: one \`deskfleet-server\`, one
\`deskfleet-fleet-sim\` holding one OpAMP WebSocket per simulated desktop, and the
\`install_all\` driver (signed API calls, \`crates/client/examples/install_all.rs\`). All three
share the same {os.cpu_count()} cores. Every connection is TLS (wss for OpAMP, https for
the downloads and the API) with the server's own CA, which the simulator pins by the
enrollment token's fingerprint. Each simulated desktop enrolls with an enrollment
token, and when offered the package downloads it, checks its SHA-256 and its ed25519
signature against the server's public key, then reports DOWNLOADING, INSTALLING,
INSTALLED with the offered version and a healthy agent; a sub-job counts as done when the
server has recorded that INSTALLED report. The installs are submitted as jobs of 100 desktop ids, 8 requests at a
time, then every job is polled with ShowJob until it ends.

| measure | result | goal | met |
|---|---|---|---|
""")
    for r in rows:
        f.write("| " + " | ".join(r) + " |\n")
    f.write(f"""
## Upgrade with rollout control

Right after the install above, in the same run: version 0.2.0 (the same binary in a new
archive) is published with \`admin packages publish\`, and every desktop is upgraded to it
with BatchInstallAgent in jobs of 100 desktop ids with \`max_concurrency\` "$MAX_CONCURRENCY"
and \`max_errors\` "$MAX_ERRORS" (the rollout-control extension, \`docs/api.md\`). A share of
$FAIL_SHARE of the simulated desktops (\`deskfleet-fleet-sim --fail-upgrade-share\`) fail
every upgrade: they download and verify the package, then report the guest's automatic
rollback (\`InstallFailed\`, \`agent-exited: ...; rolled back to 0.1.0\`) instead of
\`Installed\`. A job stops once more of its desktops failed than \`max_errors\` allows; its
desktops not started yet end FAILED with \`WKS.00990020\`.

| measure | result |
|---|---|
| upgrade of every desktop (jobs of 100) | {upgrade['total_secs']:.1f} s |
| desktops upgraded | {upgrade['success']} |
| upgrades failed on the desktop (rolled back there) | {upgrade_failed} |
| desktops not started because their job's rollout stopped at \`max_errors\` | {stopped} |
| failure codes | {upgrade['failure_codes']} |
| most sub-jobs of one job seen RUNNING at once (ShowJob polls) | {upgrade['most_running_in_a_job']} (limit $MAX_CONCURRENCY of 100) |
| server CPU during the upgrade | {upgrade_cpu:.1f} s |
| server resident memory after the upgrade | {$upgrade_rss/1024:.1f} MiB (peak {$upgrade_peak/1024:.1f} MiB) |
""")
print(open(sys.argv[1]).read())
PY
