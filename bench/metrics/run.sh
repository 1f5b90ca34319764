#!/usr/bin/env bash
# Metric ingest benchmark: DESKTOPS simulated desktops (deskfleet-fleet-sim) hold real OpAMP
# WebSocket connections (wss) to one server and each sends a monitor metrics report every
# INTERVAL seconds (20 Cloud Eye points each: CPU, load, memory, two file systems, network).
# After a warm-up, it measures over DURATION seconds: the server's CPU share, the points
# written and dropped, and the database's growth, extrapolated to a day. Then it stops the
# fleet, adds one day of 5-minute roll-ups for every series the run created (as the roll-up
# worker would have written them), and measures ShowMetricData and BatchListMetricData
# latency over that day with the unchanged huaweicloudsdkces client.
#
#   bench/metrics/run.sh                                   # SQLite
#   BACKEND=postgres PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres bench/metrics/run.sh
#   DESKTOPS=1000 DURATION=60 bench/metrics/run.sh         # a quick look
#   INGEST_ONLY=1 bench/metrics/run.sh                     # the ingest half only
# Writes bench/metrics/RESULTS-$BACKEND.md (INGEST_ONLY: RESULTS-ingest-$BACKEND.md). Needs
# .venv (scripts/sdk-tests.sh makes it), except with INGEST_ONLY.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

BACKEND=${BACKEND:-sqlite}
DESKTOPS=${DESKTOPS:-10000}
INTERVAL=${INTERVAL:-10}
CONNECT_RATE=${CONNECT_RATE:-2000}
WARMUP=${WARMUP:-60}
DURATION=${DURATION:-300}
CALLS=${CALLS:-500}
INGEST_ONLY=${INGEST_ONLY:-0}
if [ "$INGEST_ONLY" = 1 ]; then RESULTS=${RESULTS:-bench/metrics/RESULTS-ingest-$BACKEND.md}; fi
RESULTS=${RESULTS:-bench/metrics/RESULTS-$BACKEND.md}
OUT=$(mktemp -d)
PY=${PY:-.venv/bin/python}
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "${PG_DB:-}" ]; then psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true; fi
  rm -rf "$OUT"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$INGEST_ONLY" = 1 ] || [ -x "$PY" ] || { echo "no $PY: run scripts/sdk-tests.sh once to make .venv" >&2; exit 2; }

PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" --locked -p deskfleet-server -p deskfleet-fleet-sim --bins
BIN=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")

database_url=""
if [ "$BACKEND" = postgres ]; then
  : "${PG_ADMIN_URL:?set PG_ADMIN_URL, e.g. postgres://postgres@127.0.0.1:5432/postgres}"
  PG_DB="df_bench_metrics_$$"
  psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $PG_DB" >/dev/null
  database_url="${PG_ADMIN_URL%/*}/$PG_DB"
fi

cat > "$OUT/settings.toml" <<TOML
$([ -n "$database_url" ] && echo "database_url = \"$database_url\"")
[throttle]
enabled = false
[fleet]
max_new_connections_per_sec = 5000
[packages]
publish_bundled_monitor = false
TOML

start_server() {
  "$BIN/deskfleet-server" --data-dir "$OUT" --listen 127.0.0.1:0 --config "$OUT/settings.toml" \
    >> "$OUT/server.out" 2>> "$OUT/server.log" &
  server=$!
  for _ in $(seq 1 300); do [ -s "$OUT/listen.addr" ] && break; sleep 0.1; done
  [ -s "$OUT/listen.addr" ] || { tail "$OUT/server.log" >&2; exit 1; }
  endpoint=$(cat "$OUT/endpoint.url")
}
stop_server() { kill "$server"; wait "$server" 2>/dev/null || true; rm -f "$OUT/listen.addr"; }
start_server
# No package is offered here; the simulator still wants a key to trust: a fresh one.
openssl genpkey -algorithm ed25519 -out "$OUT/unused.key" 2>/dev/null
openssl pkey -in "$OUT/unused.key" -pubout -outform DER | tail -c 32 | od -An -tx1 | tr -d ' \n' > "$OUT/trusted.pub"
project=$(json "$OUT/bootstrap.json" project_id)
ak=$(json "$OUT/bootstrap.json" access_key)
sk=$(json "$OUT/bootstrap.json" secret_key)
token=$("$BIN/deskfleet-server" --data-dir "$OUT" --config "$OUT/settings.toml" admin enrollment-tokens create \
  --project "$project" | python3 -c 'import json,sys; print(json.load(sys.stdin)["enrollment_token"])')

# PostgreSQL's own work for the server: the backends of the benchmark's database (the
# server's pool keeps them for the whole window) and the cluster's WAL writer, checkpointer
# and background writer (shared with whatever else uses the cluster: an upper bound).
pg_pids() {
  psql "$database_url" -tAc "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
    OR backend_type IN ('walwriter', 'checkpointer', 'background writer')" | tr '\n' ' '
}
ticks_of() { local t=0 p; for p in $1; do [ -r "/proc/$p/stat" ] && t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)
db_bytes() {
  if [ "$BACKEND" = postgres ]; then
    psql "$database_url" -tAc "SELECT pg_database_size(current_database())"
  else
    # The WAL file may be gone (the last connection removes it).
    du -cb "$OUT"/deskfleet.db* | tail -1 | cut -f1
  fi
}
# A counter of the server's /metrics (0 when not incremented yet).
counter() {
  curl -s --cacert "$OUT/ca.pem" "$endpoint/metrics" |
    awk -v m="$1" -v l="${2:-}" 'index($1, m) == 1 && (l == "" || index($1, l)) {s += $2} END {printf "%d\n", s}'
}
sql_rows() {
  local q="SELECT (SELECT count(*) FROM metric_points), (SELECT count(*) FROM metric_rollups), (SELECT count(*) FROM metric_series)"
  if [ "$BACKEND" = postgres ]; then psql "$database_url" -tAF' ' -c "$q"; else sqlite3 -readonly "$OUT/deskfleet.db" "$q" | tr '|' ' '; fi
}

DESKFLEET_ENROLLMENT_TOKEN="$token" "$BIN/deskfleet-fleet-sim" --server "$endpoint" \
  --trusted-key "$OUT/trusted.pub" --desktops "$DESKTOPS" --connect-rate "$CONNECT_RATE" \
  --metrics-interval-secs "$INTERVAL" > "$OUT/sim.out" 2> "$OUT/sim.log" &
sim=$!
for _ in $(seq 1 6000); do grep -q '"event":"connected"' "$OUT/sim.out" 2>/dev/null && break; sleep 0.1; done
grep -q '"event":"connected"' "$OUT/sim.out" || { echo "desktops did not all connect" >&2; tail "$OUT/sim.log" >&2; exit 1; }
sleep "$WARMUP"

run_start_ms=$(date +%s%3N)
cpu0=$(cpu_ticks "$server"); db0=$(db_bytes)
pgpids=""; pgcpu0=0
if [ "$BACKEND" = postgres ]; then pgpids=$(pg_pids); pgcpu0=$(ticks_of "$pgpids"); fi
written0=$(counter deskfleet_metric_points_written_total); dropped0=$(counter deskfleet_metric_reports_dropped_total)
t0=$(date +%s.%N)
sleep "$DURATION"
t1=$(date +%s.%N)
cpu1=$(cpu_ticks "$server"); db1=$(db_bytes)
pgcpu1=$([ -n "$pgpids" ] && ticks_of "$pgpids" || echo 0)
written1=$(counter deskfleet_metric_points_written_total); dropped1=$(counter deskfleet_metric_reports_dropped_total)
rss=$(rss_kib "$server")
open_minutes=$(curl -s --cacert "$OUT/ca.pem" "$endpoint/metrics" | awk '$1 == "deskfleet_metric_open_minutes" {print $2}')
sim_line=$(tail -1 "$OUT/sim.out")
echo "measured: secs $t0..$t1 cpu_ticks $cpu0..$cpu1 pg_ticks $pgcpu0..$pgcpu1 db $db0..$db1 written $written0..$written1 dropped $dropped0..$dropped1 rss $rss sim $sim_line" >&2
kill "$sim" 2>/dev/null || true; wait "$sim" 2>/dev/null || true
stop_server
read -r raw_rows rollup_rows series_rows < <(sql_rows)

if [ "$INGEST_ONLY" = 1 ]; then
python3 - "$RESULTS" <<PY
import json, sys, datetime, os, platform
sim = json.loads('''$sim_line''')
secs = $t1 - $t0
cpu = ($cpu1 - $cpu0) / $hz / secs
pgcpu = ($pgcpu1 - $pgcpu0) / $hz / secs
rows_written = $written1 - $written0
dropped = $dropped1 - $dropped0
growth = ($db1 - $db0) / secs * 86400
reports_per_sec = $DESKTOPS / $INTERVAL
rows = [
    ("simulated desktops, one report every $INTERVAL s each", f"{sim['connected']} connected, {sim['metrics_sent']} reports sent in all", "10,000", ""),
    ("values offered", f"{reports_per_sec * 20:,.0f}/s ({reports_per_sec:,.0f} reports/s of 20 values)", "", ""),
    ("raw rows (series-minutes) written in the measured {0:.0f} s".format(secs), f"{rows_written:,} ({rows_written/secs:,.0f}/s)", "", ""),
    ("reports dropped (queue full or store refused)", f"{dropped:,}", "0", "yes" if dropped == 0 else "no"),
    ("server CPU", f"{100*cpu:.1f} % of one core", "< 25 %", "yes" if cpu < 0.25 else "no"),
    *([("PostgreSQL CPU for it (its backends, WAL writer, checkpointer, background writer)", f"{100*pgcpu:.1f} % of one core; server and database together {100*(cpu+pgcpu):.1f} %", "< 25 % together", "yes" if cpu + pgcpu < 0.25 else "no")] if "$BACKEND" == "postgres" else []),
    ("server resident memory", f"{$rss/1024:.0f} MiB ({int(float('${open_minutes:-0}')):,} series-minutes open at the end)", "", ""),
    ("database growth", f"{($db1 - $db0)/2**20:.0f} MiB in {secs:.0f} s = {growth/2**30:.2f} GiB/day before retention", "", ""),
    ("rows after the run (open minutes flushed at shutdown)", f"{$raw_rows:,} raw minute rows, {$rollup_rows:,} roll-up buckets, {$series_rows:,} series", "", ""),
]
with open(sys.argv[1], "w") as f:
    f.write(f"""# Metric ingest benchmark (one-minute raw data): $BACKEND

Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC by \`INGEST_ONLY=1 BACKEND=$BACKEND bench/metrics/run.sh\`
(DESKTOPS=$DESKTOPS, INTERVAL=$INTERVAL s, WARMUP=$WARMUP s, DURATION=$DURATION s) on a
{os.cpu_count()}-core machine (Linux {platform.release()}), release build, default
\`metric_data\` settings, server and simulator on loopback sharing the same cores.

| measure | result | goal | met |
|---|---|---|---|
""")
    for r in rows:
        f.write("| " + " | ".join(r) + " |\n")
print(open(sys.argv[1]).read())
PY
exit 0
fi

# One day of 5-minute roll-ups (30 values each) for every series, ending where the run
# began; the roll-up marks say it is rolled up, as the worker would have left them. The
# time index is built after the rows (faster than 57 million random index inserts).
day_end=$(( run_start_ms / 300000 * 300000 ))
day_start=$(( day_end - 86400000 ))
backfill_select="s.id, 300000, $day_start + b.i * 300000, 30, 30.0 * ((s.id + b.i) % 97), 30.0 * ((s.id + b.i) % 97) * ((s.id + b.i) % 97) + 30, ((s.id + b.i) % 97) - 1, ((s.id + b.i) % 97) + 1"
b0=$(date +%s.%N)
if [ "$BACKEND" = postgres ]; then
  psql "$database_url" -qc "DROP INDEX metric_rollups_ts;
    INSERT INTO metric_rollups (series_id, period, ts, n, sum, sum_sq, min, max)
    SELECT $backfill_select FROM metric_series s, generate_series(0, 287) AS b(i) ORDER BY s.id, b.i ON CONFLICT DO NOTHING;
    INSERT INTO metric_rollup_marks VALUES (300000, $day_end), (3600000, $day_end)
    ON CONFLICT (period) DO UPDATE SET done_until = GREATEST(metric_rollup_marks.done_until, excluded.done_until);
    CREATE INDEX metric_rollups_ts ON metric_rollups (period, ts);"
  # A day-old bucket is no longer written: autovacuum would long since have marked its
  # pages all-visible, which index-only scans need. Do now what it would have done.
  psql "$database_url" -qc "VACUUM (ANALYZE) metric_rollups"
  psql "$database_url" -qc "ANALYZE"
else
  sqlite3 "$OUT/deskfleet.db" "DROP INDEX metric_rollups_ts;
    WITH RECURSIVE b(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM b WHERE i < 287)
    INSERT INTO metric_rollups (series_id, period, ts, n, sum, sum_sq, min, max)
    SELECT $backfill_select FROM metric_series s, b WHERE true ORDER BY s.id, b.i ON CONFLICT DO NOTHING;
    INSERT INTO metric_rollup_marks VALUES (300000, $day_end), (3600000, $day_end)
    ON CONFLICT (period) DO UPDATE SET done_until = max(done_until, excluded.done_until);
    CREATE INDEX metric_rollups_ts ON metric_rollups (period, ts);
    PRAGMA wal_checkpoint(TRUNCATE);"
fi
b1=$(date +%s.%N)
db2=$(db_bytes)
echo "backfill: $b0..$b1 db $db2 rows $raw_rows $rollup_rows $series_rows" >&2
start_server
queries=$("$PY" bench/metrics/query_latency.py "$endpoint" "$OUT/ca.pem" "$project" "$ak" "$sk" "$day_end" "$CALLS")
echo "queries: $queries" >&2
stop_server

python3 - "$RESULTS" <<PY
import json, sys, datetime, os, platform
q = json.loads('''$queries''')
sim = json.loads('''$sim_line''')
secs = $t1 - $t0
cpu = ($cpu1 - $cpu0) / $hz / secs
pgcpu = ($pgcpu1 - $pgcpu0) / $hz / secs
points = $written1 - $written0
dropped = $dropped1 - $dropped0
growth = ($db1 - $db0) / secs * 86400
per_point = ($db1 - $db0) / max(points, 1)
reports_per_sec = $DESKTOPS / $INTERVAL
rows = [
    ("simulated desktops, one report every $INTERVAL s each", f"{sim['connected']} connected, {sim['metrics_sent']} reports sent in all", "10,000", ""),
    ("points written in the measured {0:.0f} s".format(secs), f"{points:,} ({points/secs:,.0f}/s; {reports_per_sec:,.0f} reports/s offered)", "", ""),
    ("reports dropped (queue full or store refused)", f"{dropped:,}", "0", "yes" if dropped == 0 else "no"),
    ("server CPU", f"{100*cpu:.1f} % of one core", "< 25 %", "yes" if cpu < 0.25 else "no"),
    *([("PostgreSQL CPU for it (its backends, WAL writer, checkpointer, background writer)", f"{100*pgcpu:.1f} % of one core; server and database together {100*(cpu+pgcpu):.1f} %", "< 25 % together", "yes" if cpu + pgcpu < 0.25 else "no")] if "$BACKEND" == "postgres" else []),
    ("server resident memory", f"{$rss/1024:.0f} MiB", "", ""),
    ("database growth", f"{($db1 - $db0)/2**20:.0f} MiB in {secs:.0f} s = {growth/2**30:.1f} GiB/day before retention ({per_point:.0f} B/point)", "", ""),
    ("rows after the run", f"{$raw_rows:,} raw points, {$rollup_rows:,} roll-up buckets, {$series_rows:,} series", "", ""),
    ("one day of 5-minute roll-ups added", f"{q['series']:,} series x 288 buckets in {$b1 - $b0:.0f} s; database {$db2/2**30:.2f} GiB", "", ""),
    ("ShowMetricData, 1 day at period 300: HTTP round trip", f"p50 {q['show_http_p50_ms']:.1f} ms, p99 {q['show_http_p99_ms']:.1f} ms ({q['show_calls']} calls)", "p99 < 50 ms", "yes" if q['show_http_p99_ms'] < 50 else "no"),
    ("BatchListMetricData, 10 metrics x 1 day at period 300: HTTP round trip", f"p50 {q['batch_http_p50_ms']:.1f} ms, p99 {q['batch_http_p99_ms']:.1f} ms ({q['batch_calls']} calls)", "p99 < 50 ms", "yes" if q['batch_http_p99_ms'] < 50 else "no"),
    ("ShowMetricData through the SDK (its decoding included)", f"p50 {q['show_p50_ms']:.1f} ms, p99 {q['show_p99_ms']:.1f} ms ({q['show_calls']} calls, {q['show_points_mean']:.0f} points each)", "", ""),
    ("BatchListMetricData through the SDK (its decoding included)", f"p50 {q['batch_p50_ms']:.1f} ms, p99 {q['batch_p99_ms']:.1f} ms ({q['batch_calls']} calls, {q['batch_points_mean']:.0f} points each)", "", ""),
]
with open(sys.argv[1], "w") as f:
    f.write(f"""# Metric ingest and query benchmark: $BACKEND

Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC by \`BACKEND=$BACKEND bench/metrics/run.sh\`
(DESKTOPS=$DESKTOPS, INTERVAL=$INTERVAL s, WARMUP=$WARMUP s, DURATION=$DURATION s) on a
{os.cpu_count()}-core machine (Linux {platform.release()}), release build, default
\`metric_data\` settings, everything on loopback and sharing the same cores: one
\`deskfleet-server\`, one \`deskfleet-fleet-sim\` holding a wss OpAMP connection per
simulated desktop and sending a metrics report (20 points) per desktop every $INTERVAL s,
then the queries, one call at a time: as HTTP round trips (requests signed by the SDK's
Signer on a kept-alive HTTPS connection, the body read, not decoded) and through the
unchanged Python SDK (signing and its decoding of the answer into model objects included).

| measure | result | goal | met |
|---|---|---|---|
""")
    for r in rows:
        f.write("| " + " | ".join(r) + " |\n")
print(open(sys.argv[1]).read())
PY
