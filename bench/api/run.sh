#!/usr/bin/env bash
# API benchmark: signed BatchInstallAgent with 2 and with 100 desktop_ids against a bare
# axum JSON endpoint, measured in the same run with wrk on loopback, on SQLite and (when
# a PostgreSQL URL is given or TEST_DATABASE_URL is set) on PostgreSQL. The server speaks
# https as it does by default (its own CA, DATA_DIR/ca.pem); the bare endpoint is plain
# http, so the comparison includes the cost of TLS.
#
#   bench/api/run.sh                 # writes bench/api/RESULTS.md
#   DURATION=30 CONNECTIONS=64 PG_URL=postgres://postgres@127.0.0.1:5432/test bench/api/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
# Desktops per project: install-2-spread takes its pairs from all of them.
SPREAD=${SPREAD:-10000}
PG_URL=${PG_URL:-${TEST_DATABASE_URL:-}}
OUT=$(mktemp -d)
RESULTS=bench/api/RESULTS.md
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
# PROFILE=dev: a quick check of the script itself with debug binaries (no figures).
PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" --locked -p deskfleet-server --bins --examples
cargo build --profile "$PROFILE" --locked -p deskfleet-client --examples
BIN=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")

wait_file() { for _ in $(seq 1 300); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; return 1; }

# wrk_lua BODY_FILE HEADERS_FILE > script.lua
wrk_lua() {
  echo 'wrk.method = "POST"'
  printf 'wrk.body = [[%s]]\n' "$(cat "$1")"
  while IFS= read -r line; do
    name=${line%%: *}; value=${line#*: }
    printf 'wrk.headers["%s"] = "%s"\n' "$name" "$value"
  done < "$2"
}

# spread_lua SIGNED_JSONL > script.lua: requests taken in turn from `sign --lines` output.
spread_lua() {
  python3 - "$1" "$THREADS" <<'PY'
import json, sys
threads = int(sys.argv[2])
print('wrk.method = "POST"')
print("local requests = {")
for line in open(sys.argv[1]):
    r = json.loads(line)
    headers = ", ".join(f'["{k}"] = "{v}"' for k, v in r["headers"].items())
    print(f'  {{ [[{r["body"]}]], {{ {headers} }} }},')
print("}")
print("local per_thread = math.floor(#requests / %d)" % threads)
print("""local threads = 0
function setup(thread)
  thread:set("first", threads)
  threads = threads + 1
end
local i
function init(args)
  i = first * per_thread
end
function request()
  i = i % #requests + 1
  local r = requests[i]
  return wrk.format(nil, nil, r[2], r[1])
end""")
PY
}

# run_wrk NAME URL LUA -> appends "NAME rps p50 p99 errors" to $OUT/rows
run_wrk() {
  local name=$1 url=$2 lua=$3 log="$OUT/$1.log"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$lua" "$url" > "$log"
  local rps p50 p99 non2xx
  rps=$(awk '/^Requests\/sec/ {print $2}' "$log")
  p50=$(awk '$1=="50%" {print $2}' "$log")
  p99=$(awk '$1=="99%" {print $2}' "$log")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$log"); non2xx=${non2xx:-0}
  echo "$name $rps $p50 $p99 $non2xx" >> "$OUT/rows"
  echo "$name: $rps req/s, p50 $p50, p99 $p99, non-2xx $non2xx"
}

# The body file holds exactly the bytes that are signed and sent (no trailing newline).
ids_json() { python3 -c 'import json,sys; ids=[d["desktop_id"] for d in json.load(open(sys.argv[1]))]; sys.stdout.write(json.dumps({"desktop_ids": ids[:int(sys.argv[2])]}))' "$1" "$2"; }

# check_request URL HEADERS BODY: one request as wrk will send it must succeed.
check_request() {
  local args=()
  while IFS= read -r line; do args+=(-H "$line"); done < "$2"
  local status
  local tls=()
  [ -f "${CA_CERT:-}" ] && tls=(--cacert "$CA_CERT")
  status=$(curl -s -o "$OUT/check.out" -w '%{http_code}' -X POST ${tls[@]+"${tls[@]}"} "${args[@]}" --data-binary "@$3" "$1")
  if [ "$status" != 200 ]; then
    echo "the benchmark request is refused ($status): $(cat "$OUT/check.out")" >&2
    exit 1
  fi
}

# bench_backend LABEL DB_URL [TLS=on|off] [AUDIT=on|off]
bench_backend() {
  local label=$1 db_url=$2 tls=${3:-on} audit=${4:-on} dir="$OUT/$1"
  mkdir -p "$dir"
  printf '[throttle]\nenabled = false\n' > "$dir/settings.toml"
  [ "$tls" = off ] && printf '[tls]\nenabled = false\n' >> "$dir/settings.toml"
  [ "$audit" = off ] && printf '[audit]\nenabled = false\n' >> "$dir/settings.toml"
  local db_args=()
  [ -n "$db_url" ] && db_args=(--database-url "$db_url")
  "$BIN/deskfleet-server" --data-dir "$dir" --listen 127.0.0.1:0 --config "$dir/settings.toml" "${db_args[@]}" \
    > "$dir/server.out" 2> "$dir/server.log" &
  local pid=$!
  wait_file "$dir/listen.addr" # written after endpoint.url
  local endpoint; endpoint=$(cat "$dir/endpoint.url")
  SPREAD=$SPREAD python3 - "$dir/desktops.json" <<'PY'
import json, os, sys
SPREAD = int(os.environ["SPREAD"])
json.dump([{"computer_name": f"bench-{i:05}", "ip_address": f"10.1.{i // 250}.{i % 250 + 1}", "os_type": "Linux"} for i in range(SPREAD)], open(sys.argv[1], "w"))
PY
  local project ak sk
  project=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["project_id"])' "$dir/bootstrap.json")
  ak=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_key"])' "$dir/bootstrap.json")
  sk=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secret_key"])' "$dir/bootstrap.json")
  "$BIN/deskfleet-server" --data-dir "$dir" "${db_args[@]}" admin desktops import --project "$project" "$dir/desktops.json" > "$dir/imported.json"
  local url="$endpoint/v2/$project/desktops/agents"
  CA_CERT="$dir/ca.pem"
  for n in 2 100; do
    ids_json "$dir/imported.json" "$n" > "$dir/body$n.json"
    "$BIN/examples/sign" POST "$url" "$ak" "$sk" "$project" "$dir/body$n.json" > "$dir/headers$n"
    check_request "$url" "$dir/headers$n" "$dir/body$n.json"
    wrk_lua "$dir/body$n.json" "$dir/headers$n" > "$dir/install$n.lua"
    run_wrk "$label-install-$n" "$url" "$dir/install$n.lua"
  done
  # 2 ids a request again, each request on its own pair of the SPREAD desktops (signed
  # ahead, replayed in turn, each wrk thread from its own point of the list), as when an
  # operator's installs go to different desktops rather than all to the same two.
  python3 - "$dir/imported.json" > "$dir/pairs.txt" <<'PY'
import json, sys
ids = [d["desktop_id"] for d in json.load(open(sys.argv[1]))]
for i in range(0, len(ids) - 1, 2):
    print(json.dumps({"desktop_ids": ids[i : i + 2]}))
PY
  "$BIN/examples/sign" POST "$url" "$ak" "$sk" "$project" --lines "$dir/pairs.txt" > "$dir/signed.jsonl"
  spread_lua "$dir/signed.jsonl" > "$dir/spread.lua"
  run_wrk "$label-install-2-spread" "$url" "$dir/spread.lua"
  local rss; rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  echo "$label-server-peak-rss-kib $rss" >> "$OUT/rows"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# The baseline, in the same run.
"$BIN/examples/bare" 127.0.0.1:0 > "$OUT/bare.addr" &
wait_file "$OUT/bare.addr"
bare_url="http://$(head -n1 "$OUT/bare.addr")/v2/p/desktops/agents"
printf '{"desktop_ids": ["a", "b"]}' > "$OUT/bare.json"
: > "$OUT/bare.headers"; echo "Content-Type: application/json" > "$OUT/bare.headers"
wrk_lua "$OUT/bare.json" "$OUT/bare.headers" > "$OUT/bare.lua"
run_wrk bare-2 "$bare_url" "$OUT/bare.lua"
kill %1 2>/dev/null || true

bench_backend sqlite ""
# The same server with TLS off, in the same run: the cost of TLS.
bench_backend sqlite-http "" off
# The same server with auditing off (audit.enabled = false), in the same run: the cost of
# the audit trail (a trace appended in each change's transaction).
bench_backend sqlite-noaudit "" on off
if [ -n "$PG_URL" ]; then
  for variant in postgres:on postgres-noaudit:off; do
    db="deskfleet_bench_$$"
    psql -q "$PG_URL" -c "CREATE DATABASE $db" >/dev/null
    bench_backend "${variant%%:*}" "${PG_URL%/*}/$db" on "${variant##*:}"
    psql -q "$PG_URL" -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
  done
fi

python3 - "$OUT/rows" "$RESULTS" "$DURATION" "$CONNECTIONS" "$THREADS" "$SPREAD" <<'PY'
import sys, subprocess, datetime, platform, os
rows_file, results, duration, conns, threads, spread = sys.argv[1:]
spread_pairs = int(spread) // 2
rows = {}
rss = {}
for line in open(rows_file):
    parts = line.split()
    if parts[0].endswith("peak-rss-kib"):
        rss[parts[0].rsplit("-server-peak", 1)[0]] = int(parts[1])
    else:
        rows[parts[0]] = parts[1:]
bare = float(rows["bare-2"][0])
def ms(v):
    v = v.strip()
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
lines = []
lines.append("| run | requests/s | % of bare | p50 | p99 | non-2xx | p99 < 25 ms | >= 25 % of bare |")
lines.append("|---|---|---|---|---|---|---|---|")
for name, (rps, p50, p99, non2xx) in rows.items():
    pct = 100.0 * float(rps) / bare
    goal_pct = "yes" if pct >= 25 else "no"
    goal_p99 = "yes" if ms(p99) < 25 else "no"
    if name.startswith("bare"):
        goal_pct = goal_p99 = "—"
    elif non2xx != "0":
        goal_pct = goal_p99 = "no: requests failed"
    lines.append(f"| {name} | {float(rps):.0f} | {pct:.1f} % | {p50} | {p99} | {non2xx} | {goal_p99} | {goal_pct} |")
mem = " ".join(f"{k}: {v/1024:.1f} MiB" for k, v in rss.items())
audit = []
for backend in ("sqlite", "postgres"):
    for n in ("2", "100", "2-spread"):
        on, off = rows.get(f"{backend}-install-{n}"), rows.get(f"{backend}-noaudit-install-{n}")
        if on and off:
            cost = 100.0 * (1 - float(on[0]) / float(off[0]))
            verdict = "yes" if cost < 10 else "no"
            audit.append(f"| {backend}-install-{n} | {float(on[0]):.0f} | {float(off[0]):.0f} | {cost:.1f} % | {verdict} |")
audit_table = ""
if audit:
    audit_table = (
        "\nThe cost of auditing: the same server with `audit.enabled = false` (`*-noaudit-*` rows), "
        "in the same run. Goal: auditing costs under 10 % of BatchInstallAgent's requests/s.\n\n"
        "| run | requests/s audited | requests/s not audited | cost | < 10 % |\n|---|---|---|---|---|\n"
        + "\n".join(audit) + "\n")
kernel = platform.release()
cpus = os.cpu_count()
# The history below the latest run (kept by hand, one row per run) survives a new run.
history = ""
if os.path.exists(results):
    old = open(results).read()
    marker = old.find("\n## ")
    if marker >= 0:
        history = old[marker:]
with open(results, "w") as f:
    f.write(f"""# API benchmark results

Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC by `bench/api/run.sh` on a {cpus}-core machine
(Linux {kernel}). Each run is `wrk -t{threads} -c{conns} -d{duration}s --latency` on loopback; wrk
and the server share the same {cpus} cores. `bare-2` is a bare axum endpoint (JSON in, JSON
out, no auth, no storage; `crates/server/examples/bare.rs`) measured in the same run.
`install-N` is the real `POST /v2/{{project_id}}/desktops/agents` with N `desktop_ids`,
over https (the server's own CA; TLS 1.3, keep-alive connections, so the handshakes are
few and the cost is mostly record encryption); `sqlite-http-*` is the same server with
`tls.enabled = false`, in the same run, so the two rows give the cost of TLS; signed with SDK-HMAC-SHA256 (a signature replayed within its 15-minute validity), release
build, throttling off; each answered request is a job with N sub-jobs committed durably
(SQLite: WAL with `synchronous=FULL`, group commit; PostgreSQL: `synchronous_commit=on`)
before the answer. `install-2` sends the same two ids every time, so every request's
sub-jobs follow the same two leaders and every transaction locks the same two desktop
rows; `install-2-spread` takes each request's pair in turn from {spread} desktops
({spread_pairs} pairs signed ahead), as when installs go to different desktops. Goals: install-2 at >= 25 % of bare's requests/s, p99 < 25 ms.

{chr(10).join(lines)}
{audit_table}
Server peak resident memory during the runs: {mem}.
{history}""")
print(open(results).read())
PY
