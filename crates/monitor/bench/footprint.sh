#!/usr/bin/env bash
# Measures what deskfleet-monitor costs the desktop it runs on: builds the release binary,
# runs it as the guest would (stdout to a pipe) for FOOTPRINT_SECS seconds at
# FOOTPRINT_INTERVAL_MS, samples its resident memory and CPU time from /proc/PID once a
# second, then stops it with SIGTERM and writes crates/monitor/bench/RESULTS.md.
#
#   crates/monitor/bench/footprint.sh                 # 60 s at the default 10 s interval
#   FOOTPRINT_SECS=600 crates/monitor/bench/footprint.sh
#
# Linux only (it reads /proc). Needs cargo, awk, getconf.
set -euo pipefail

secs="${FOOTPRINT_SECS:-60}"
interval_ms="${FOOTPRINT_INTERVAL_MS:-10000}"
bench_dir="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$bench_dir/../../.." && pwd)"
results="${FOOTPRINT_RESULTS:-$bench_dir/RESULTS.md}"

cd "$root"
cargo build --release --quiet -p deskfleet-monitor
bin="${CARGO_TARGET_DIR:-$root/target}/release/deskfleet-monitor"

work="$(mktemp -d)"
agent_pid=""
cleanup() {
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

clk_tck="$(getconf CLK_TCK)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

# Through a pipe, like under the guest daemon ($! is the agent, not the reader).
"$bin" --interval-ms "$interval_ms" > >(cat > "$work/out.jsonl") &
agent_pid=$!
started_ns="$(date +%s%N)"

# utime + stime (fields 14 and 15; counted after the ")" ending the command name).
cpu_ticks() { sed 's/.*) //' "/proc/$agent_pid/stat" | awk '{ print $12 + $13 }'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$agent_pid/status"; }
# Nanoseconds on a CPU (scheduler accounting): the tick counters above are 10 ms grains,
# too coarse for a process that runs for well under that per sample. 0 if unavailable.
cpu_ns() { if [ -r "/proc/$agent_pid/schedstat" ]; then cut -d' ' -f1 "/proc/$agent_pid/schedstat"; else echo 0; fi; }

: > "$work/samples.tsv"
for ((i = 0; i <= secs; i++)); do
  if ! kill -0 "$agent_pid" 2>/dev/null; then
    echo "footprint: the agent exited early; output:" >&2
    cat "$work/out.jsonl" >&2
    exit 1
  fi
  printf '%s\t%s\t%s\t%s\n' "$i" "$(rss_kib)" "$(cpu_ticks)" "$(cpu_ns)" >> "$work/samples.tsv"
  [ "$i" -lt "$secs" ] && sleep 1
done
elapsed_ns=$(($(date +%s%N) - started_ns))

kill -TERM "$agent_pid"
status=0
wait "$agent_pid" || status=$?
agent_pid=""
sleep 0.2 # let the reader drain the last line
if [ "$status" -ne 0 ]; then
  echo "footprint: the agent exited with $status after SIGTERM" >&2
  exit 1
fi

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
metrics_lines="$(grep -c '"type":"metrics"' "$work/out.jsonl" || true)"
health_lines="$(grep -c '"type":"health"' "$work/out.jsonl" || true)"
last_self="$(grep -o '"self":{[^}]*}' "$work/out.jsonl" | tail -n 1)"
binary_kib=$(($(stat -c %s "$bin") / 1024))

stripped_kib="n/a"
if command -v strip >/dev/null; then
  strip -o "$work/stripped" "$bin" && stripped_kib="$(($(stat -c %s "$work/stripped") / 1024)) KiB"
fi

read -r rss_max rss_avg rss_first ticks_first ticks_last ns_first ns_last n < <(awk '
  NR == 1 { rss_first = $2; ticks_first = $3; ns_first = $4 }
  { sum += $2; if ($2 > max) max = $2; ticks_last = $3; ns_last = $4; n++ }
  END { printf "%d %.0f %d %d %d %s %s %d\n", max, sum / n, rss_first, ticks_first, ticks_last, ns_first, ns_last, n }
' "$work/samples.tsv")

# CPU over the sampled run (after start-up) and over the whole life including start-up,
# from schedstat nanoseconds when available, else from ticks.
figures="$(awk -v tf="$ticks_first" -v tl="$ticks_last" -v nf="$ns_first" -v nl="$ns_last" \
  -v secs="$secs" -v hz="$clk_tck" -v ns="$elapsed_ns" -v nproc="$(nproc)" \
  -v samples="$metrics_lines" 'BEGIN {
    if (nl > 0) { run_s = (nl - nf) / 1e9; life_s = nl / 1e9; source = "schedstat" }
    else { run_s = (tl - tf) / hz; life_s = tl / hz; source = "ticks" }
    run = run_s / secs * 100
    life = life_s / (ns / 1e9) * 100
    per_sample = samples > 0 ? life_s * 1000 / samples : 0
    printf "%.4f %.4f %.4f %.2f %.4f %s", run, run / nproc, life, per_sample, life_s, source
  }')"
read -r cpu_run cpu_run_machine cpu_life ms_per_sample cpu_secs cpu_source <<< "$figures"

cpu_model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
cat > "$results" <<EOF
# deskfleet-monitor footprint

Measured by \`crates/monitor/bench/footprint.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC').

| figure | value |
| --- | --- |
| resident memory, max | ${rss_max} KiB |
| resident memory, average | ${rss_avg} KiB |
| resident memory, first sample (right after start) | ${rss_first} KiB |
| CPU over the run, percent of one core | ${cpu_run} % |
| CPU over the run, percent of the machine (${cpu_run} / $(nproc) cores) | ${cpu_run_machine} % |
| CPU over its whole life, start-up included, percent of one core | ${cpu_life} % |
| CPU time in total | ${cpu_secs} s (${cpu_source}; ${ticks_last} ticks at ${clk_tck} Hz) |
| CPU time per metrics line, start-up included | ${ms_per_sample} ms |
| lines written | ${metrics_lines} metrics, ${health_lines} health (the last one \`stopping\`) |
| the agent's own last report | \`${last_self}\` |
| release binary | ${binary_kib} KiB (line tables kept); ${stripped_kib} stripped |

Machine: $(nproc) cores (${cpu_model:-unknown CPU}), Linux $(uname -r) $(uname -m),
$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM,
$(rustc --version). Load average $load_before before the run and $load_after after it
(other work was running on the machine; the agent's own figures do not depend on it much).

How it was run: the release build of \`deskfleet-monitor\` was started with
\`--interval-ms ${interval_ms}\` and its stdout piped to a reader, as the guest daemon does.
For ${secs} s, once a second, the script read \`VmRSS\` from \`/proc/PID/status\` and
\`utime + stime\` from \`/proc/PID/stat\` and the on-CPU nanoseconds from
\`/proc/PID/schedstat\` (${n} samples); CPU figures use ${cpu_source}. "Over the run" is the CPU time
spent between the first and the last sample divided by the ${secs} s between them;
"whole life" also counts the start-up and the first sample. The agent was then stopped
with SIGTERM and exited 0. Run it again with \`FOOTPRINT_SECS\` (and
\`FOOTPRINT_INTERVAL_MS\`) to measure longer or at another interval.
EOF
echo "footprint: wrote $results"
cat "$results"
