#!/bin/bash
# User and system CPU per call on each side of P2 (BENCHMARKS.md, "P2: user and kernel
# time per call"). Runs `bench P2` with BENCH_SOAK_P2=6 and reads /proc/<pid>/stat of
# the calling process and the serving one over 4 s of each side's soak.
#
#   cargo build --release --example bench && scripts/p2-cpu.sh [path/to/bench]
set -euo pipefail
BIN=${1:-target/release/examples/bench}
OUT=$(mktemp)
BENCH_SOAK_P2=6 BENCH_REPS=1 "$BIN" P2 >"$OUT" 2>&1 &
BP=$!
# The bench's node and server processes first: killed, the bench cannot end them.
trap 'pkill -P $BP 2>/dev/null || true; kill $BP 2>/dev/null || true; rm -f "$OUT"' EXIT
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; }
# Waits for the bench to print $1; if it ends first, shows what it printed.
wait_for() {
    until grep -q "$1" "$OUT"; do
        kill -0 $BP 2>/dev/null || { cat "$OUT"; echo "the bench ended early" >&2; exit 1; }
        sleep 0.05
    done
}

wait_for 'soak: processhub'
sleep 0.5
# The node serving the child: the first process the bench started.
KID=$(pgrep -P $BP | head -1)
a=($(cpu $BP)); b=($(cpu $KID)); sleep 4; c=($(cpu $BP)); d=($(cpu $KID))
wait_for 'baseline for'
PH=$(grep -o 'calls, [0-9]*/s (each[^;]*; baseline' "$OUT" | grep -o '^calls, [0-9]*' | grep -o '[0-9]*$')
sleep 0.5
# The baseline's server: the child that works hardest during its soak.
declare -A ks
for k in $(pgrep -P $BP); do ks[$k]="$(cpu $k)"; done
e=($(cpu $BP)); sleep 4; f=($(cpu $BP))
best=-1; bu=0; bs=0
for k in "${!ks[@]}"; do
    x=($(cpu $k)); y=(${ks[$k]})
    g=$((x[0] + x[1] - y[0] - y[1]))
    if [ $g -gt $best ]; then best=$g; bu=$((x[0] - y[0])); bs=$((x[1] - y[1])); fi
done
wait_for 'done$'
BA=$(grep -o 'calls, [0-9]*/s (each[^;]*; done' "$OUT" | grep -o '^calls, [0-9]*' | grep -o '[0-9]*$')
grep -o 'soak: [0-9]* calls, .*' "$OUT" | cut -c1-200
TICK=$(getconf CLK_TCK)
per() { awk -v t="$1" -v r="$2" -v hz="$TICK" 'BEGIN { printf "%.2f", t * 1e6 / hz / (r * 4) }'; }
echo "processhub $PH/s: caller user $(per $((c[0] - a[0])) $PH) sys $(per $((c[1] - a[1])) $PH), server user $(per $((d[0] - b[0])) $PH) sys $(per $((d[1] - b[1])) $PH) µs per call"
echo "baseline   $BA/s: caller user $(per $((f[0] - e[0])) $BA) sys $(per $((f[1] - e[1])) $BA), server user $(per $bu $BA) sys $(per $bs $BA) µs per call"
