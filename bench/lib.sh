# Helpers the benchmark scripts share: `source "$(dirname "$0")/../lib.sh"`.

# json FILE KEY: one top-level field of a JSON file (bootstrap.json and the like).
json() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }

# CPU time (user + system, in clock ticks of `getconf CLK_TCK`) of process PID.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Resident memory, and its peak, of process PID in KiB.
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
