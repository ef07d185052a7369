#!/usr/bin/env bash
# Instruction-count A/B: each build's engine runs under
# `valgrind --tool=callgrind` while one harness drives it with the same
# seeded workload; prints the engine's total instructions and the work done.
# Instruction counts do not depend on what else the machine runs, so this
# settles differences that wall-clock A/Bs on a shared machine cannot.
#
#   HARNESS=DIR/switchboard-bench bench/scripts/callgrind_ab.sh RATE DURATION_S OUT DIR1 [DIR2 ...]
#   e.g. HARNESS=target/release/switchboard-bench bench/scripts/callgrind_ab.sh 60 20 ./cg /tmp/before target/release
# Each DIR holds a release build's `switchboard`. Under valgrind the engine
# saturates near 30 msg/s: 10 measures it unloaded, 60 saturated.
# ARGS_1, ARGS_2, …: extra harness arguments for DIR 1, 2, … (e.g.
# ARGS_2="--engine-config-append bench/scripts/routing-rules.toml").
set -uo pipefail
RATE=${1:?rate}; DURATION=${2:?duration}; OUT=${3:?output directory}; shift 3
: "${HARNESS:?set HARNESS to a switchboard-bench binary}"
mkdir -p "$OUT"
n=0
for dir in "$@"; do
  n=$((n + 1))
  wrapper="$OUT/engine-$n.sh"
  printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/callgrind-%s.out %s/switchboard "$@"\n' \
    "$OUT" "$n" "$(cd "$dir" && pwd)" > "$wrapper"
  chmod +x "$wrapper"
  extra_var="ARGS_$n"; extra=${!extra_var:-}
  # shellcheck disable=SC2086 # $extra is a list of arguments
  "$HARNESS" throughput $extra --engine-bin "$wrapper" --steps "$RATE" --duration "$DURATION" --agents 10 \
    --no-progress --drain-timeout 120 --json "$OUT/report-$n.json" > "$OUT/report-$n.log" 2>&1
  python3 - "$OUT" "$n" "$dir" <<'PY'
import json, re, sys
out, n, build = sys.argv[1:]
totals = int(re.search(r"^totals: (\d+)", open(f"{out}/callgrind-{n}.out").read(), re.M).group(1))
step = json.load(open(f"{out}/report-{n}.json"))["engine"]["steps"][0]
work = step["acked"] + step["replies_ok"]
print(f"{build}: {totals:,} instructions; {step['acked']} messages acked ({step['acked_per_s']:.1f}/s), "
      f"{step['replies_ok']} replies; {totals / work / 1e3:,.0f} k instructions per message or reply")
PY
done
