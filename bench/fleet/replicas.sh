#!/usr/bin/env bash
# Fleet benchmark on PostgreSQL with three replicas: N simulated desktops (default 10,000)
# spread over three deskfleet-server replicas sharing one PostgreSQL database, then the
# agent installed on all of them through the signed API (jobs of 100, sent to the first
# replica; the work reaches each desktop through the replica it is connected to).
#
# The desktops are given the three replicas' addresses, as guests are without a balancer
# (`deskfleet-guest --server a,b,c`): desktop i starts on replica i mod 3 and moves on when
# one does not answer. (HAProxy in front, as tests/sdk/test_replicas.py runs it, holds two
# descriptors per connection; this machine allows a process 20,000, so 10,000 desktops
# cannot pass one balancer process here.)
#
#   PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres bench/fleet/replicas.sh
#   DESKTOPS=3000 bench/fleet/replicas.sh
# Appends its figures to bench/fleet/RESULTS-replicas.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

DESKTOPS=${DESKTOPS:-10000}
CONNECT_RATE=${CONNECT_RATE:-2000}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
RESULTS=${RESULTS:-bench/fleet/RESULTS-replicas.md}
OUT=$(mktemp -d)
DB="deskfleet_fleet_bench_$$"
# On failure the logs are kept in target/fleet-replicas-logs/.
trap 'rc=$?; [ $rc -ne 0 ] && { mkdir -p target/fleet-replicas-logs; cp -r "$OUT"/r0 "$OUT"/r1 "$OUT"/r2 "$OUT"/sim.* target/fleet-replicas-logs/ 2>/dev/null || true; }; kill $(jobs -p) "${pids[@]}" 2>/dev/null || true; psql "$PG_ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; rm -rf "$OUT"' EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
pids=() # the replicas (started in subshells, so not among `jobs`)

cargo build --release --locked -p deskfleet-server -p deskfleet-monitor -p deskfleet-fleet-sim --bins
cargo build --release --locked -p deskfleet-client --examples
BIN=target/release

psql "$PG_ADMIN_URL" -q -c "CREATE DATABASE $DB" >/dev/null
DB_URL="${PG_ADMIN_URL%/*}/$DB"
cat > "$OUT/settings.toml" <<TOML
database_url = "$DB_URL"
[throttle]
enabled = false
[jobs]
delivery_timeout_ms = 300000
execution_timeout_ms = 300000
[fleet]
schedule_interval_ms = 200
max_new_connections_per_sec = 5000
TOML

start_replica() { # DIR -> pid
  "$BIN/deskfleet-server" --data-dir "$1" --listen 127.0.0.1:0 --config "$OUT/settings.toml" \
    > "$1/server.out" 2> "$1/server.log" &
  echo $!
}
wait_listening() { for _ in $(seq 1 300); do [ -s "$1/listen.addr" ] && return; sleep 0.1; done; echo "no listen.addr in $1" >&2; exit 1; }

mkdir -p "$OUT/r0" "$OUT/r1" "$OUT/r2"
pids+=("$(start_replica "$OUT/r0")")
wait_listening "$OUT/r0"
for r in r1 r2; do
  cp "$OUT/r0/secrets.key" "$OUT/r0/ca.pem" "$OUT/r0/ca.key" "$OUT/$r/"
  pids+=("$(start_replica "$OUT/$r")")
done
wait_listening "$OUT/r1"; wait_listening "$OUT/r2"
servers="$(cat "$OUT/r0/endpoint.url"),$(cat "$OUT/r1/endpoint.url"),$(cat "$OUT/r2/endpoint.url")"
endpoint=$(cat "$OUT/r0/endpoint.url")
project=$(json "$OUT/r0/bootstrap.json" project_id)
ak=$(json "$OUT/r0/bootstrap.json" access_key)
sk=$(json "$OUT/r0/bootstrap.json" secret_key)
token=$("$BIN/deskfleet-server" --data-dir "$OUT/r0" --database-url "$DB_URL" admin enrollment-tokens create --project "$project" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["enrollment_token"])')

pg_cpu_ticks() { # every PostgreSQL backend of the bench database, and the rest of the cluster
  local total=0
  for p in $(pgrep -f "postgres" || true); do
    [ -r "/proc/$p/stat" ] && total=$((total + $(cpu_ticks "$p" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)

t0=$(date +%s.%N)
DESKFLEET_ENROLLMENT_TOKEN="$token" "$BIN/deskfleet-fleet-sim" --server "$servers" \
  --trusted-key "$OUT/r0/package-signing.pub" --desktops "$DESKTOPS" --connect-rate "$CONNECT_RATE" \
  > "$OUT/sim.out" 2> "$OUT/sim.log" &
sim=$!
for _ in $(seq 1 6000); do grep -q '"event":"connected"' "$OUT/sim.out" 2>/dev/null && break; sleep 0.1; done
grep -q '"event":"connected"' "$OUT/sim.out" || { echo "desktops did not all connect" >&2; tail "$OUT/sim.log" >&2; exit 1; }
t1=$(date +%s.%N)
sleep 2
connected=()
for p in "${pids[@]}"; do connected+=("$(rss_kib "$p")"); done
per_replica=()
for r in r0 r1 r2; do
  per_replica+=("$(curl -s --cacert "$OUT/r0/ca.pem" "$(cat "$OUT/$r/endpoint.url")/metrics" | awk '/^deskfleet_fleet_connected_desktops /{print int($2)}')")
done

cpu0=(); for p in "${pids[@]}"; do cpu0+=("$(cpu_ticks "$p")"); done
pg0=$(pg_cpu_ticks)
install=$(DESKFLEET_CA_CERT="$OUT/r0/ca.pem" "$BIN/examples/install_all" "$endpoint" "$project" "$ak" "$sk" 100 8)
pg1=$(pg_cpu_ticks)
cpu1=(); for p in "${pids[@]}"; do cpu1+=("$(cpu_ticks "$p")"); done
after=(); peak=(); for p in "${pids[@]}"; do after+=("$(rss_kib "$p")"); peak+=("$(hwm_kib "$p")"); done
sim_rss=$(rss_kib "$sim")
kill "$sim" 2>/dev/null || true
for p in "${pids[@]}"; do kill "$p"; done
wait "${pids[@]}" 2>/dev/null || true

python3 - "$RESULTS" <<PY
import json, sys, datetime, os
install = json.loads('''$install''')
connected = json.loads('''$(grep '"event":"connected"' "$OUT/sim.out")''')
total = install["total_secs"]
hz = $hz
rss0 = [int(x) for x in "${connected[*]}".split()]
rss1 = [int(x) for x in "${after[*]}".split()]
peak = [int(x) for x in "${peak[*]}".split()]
cpu = [(b - a) / hz for a, b in zip([int(x) for x in "${cpu0[*]}".split()], [int(x) for x in "${cpu1[*]}".split()])]
per = "${per_replica[*]}".split()
pg_cpu = ($pg1 - $pg0) / hz
new = not os.path.exists(sys.argv[1])
with open(sys.argv[1], "a") as f:
    if new:
        f.write("""# Fleet benchmark on PostgreSQL, three replicas

\`bench/fleet/replicas.sh\`: three \`deskfleet-server\` replicas (release build) on one
PostgreSQL 15 database, one \`deskfleet-fleet-sim\` whose desktops are given the three
addresses (desktop i starts on replica i mod 3), and the \`install_all\` driver sending
jobs of 100 desktop ids, 8 at a time, to the first replica. Everything, PostgreSQL
included, shares one machine. TLS throughout (one private CA, a leaf per replica);
every simulated desktop downloads the signed package and verifies it.
""")
    f.write(f"""
## {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, DESKTOPS=$DESKTOPS

| measure | result | goal |
|---|---|---|
| desktops connected and enrolled | {connected['enrolled']} in {$t1 - $t0:.1f} s, per replica {', '.join(per)} | |
| install on every desktop (jobs of 100) | {total:.1f} s, {install['success']} succeeded, {install['failed']} failed {install['failure_codes']} | < 60 s |
| desktops per second | {install['desktops_per_sec']:.0f} | |
| replica resident memory, connected and idle | {', '.join(f'{k/1024:.0f}' for k in rss0)} MiB | |
| replica resident memory after the install (peak) | {', '.join(f'{k/1024:.0f}' for k in rss1)} MiB ({', '.join(f'{k/1024:.0f}' for k in peak)}) | |
| replica CPU during the install | {', '.join(f'{c:.1f}' for c in cpu)} s in {total:.1f} s ({', '.join(f'{100*c/total:.0f}' for c in cpu)} % of a core) | |
| PostgreSQL CPU during the install (every backend) | {pg_cpu:.1f} s ({100*pg_cpu/total:.0f} % of a core) | |
| load generator resident memory | {$sim_rss/1024:.0f} MiB | |
""")
print(open(sys.argv[1]).read())
PY
