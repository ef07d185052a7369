#!/usr/bin/env bash
# A/B of two builds on the same machine in the same minutes: for each rate
# and repeat, the build before, then the build after, each driving itself
# (its own switchboard-bench and switchboard). Reports go to OUT.
#
#   BEFORE=DIR AFTER=DIR bench/scripts/ab.sh [RATES] [REPEATS] [DURATION_S] [OUT]
#   AFTER_ARGS="--engine-config-append bench/scripts/routing-rules.toml" … : extra
#   arguments for the later build's runs only (a feature the earlier lacks).
#   e.g. BEFORE=/tmp/before/release AFTER=target/release bench/scripts/ab.sh 1000,2000,3000 2 15
# DIR holds a release build's `switchboard` and `switchboard-bench`.
set -uo pipefail
: "${BEFORE:?set BEFORE to the directory of the earlier build's binaries}"
: "${AFTER:?set AFTER to the directory of the later build's binaries}"
RATES=${1:-1000,3000,5000}
REPEATS=${2:-2}
DURATION=${3:-15}
OUT=${4:-./ab-results}
mkdir -p "$OUT"
for rate in ${RATES//,/ }; do
  for repeat in $(seq 1 "$REPEATS"); do
    for build in before after; do
      if [ "$build" = before ]; then dir=$BEFORE; extra=${BEFORE_ARGS:-}; else dir=$AFTER; extra=${AFTER_ARGS:-}; fi
      # shellcheck disable=SC2086 # $extra is a list of arguments
      "$dir/switchboard-bench" throughput $extra --engine-bin "$dir/switchboard" --steps "$rate" \
        --duration "$DURATION" --agents 50 --no-progress \
        --json "$OUT/$build-$rate-$repeat.json" --markdown "$OUT/$build-$rate-$repeat.md" \
        > "$OUT/$build-$rate-$repeat.log" 2>&1
      echo "$build $rate $repeat exit $?"
    done
  done
done
