#!/usr/bin/env bash
# Runs the engine and its two references through the same harness in one run:
# the common design (PostgreSQL + workers + NOTIFY gateway) and the ceiling
# (a signature-checking no-op server on the same HTTP stack), then the raw redb
# group-commit loop. Results go to $OUT (default ./bench-results).
#
#   bench/scripts/compare.sh [STEPS] [DURATION_S] [AGENTS]
#   e.g. bench/scripts/compare.sh 1000,2000,3000,5000 10 50
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${1:-1000,2000,3000,5000}
DURATION=${2:-10}
AGENTS=${3:-50}
OUT=${OUT:-./bench-results}
SINK_PORT=${SINK_PORT:-47311}
PG_PORT=${PG_PORT:-55432}
mkdir -p "$OUT"
cargo build --release -q -p switchboard-engine -p switchboard-bench
BIN=./target/release
WORK=$(mktemp -d)
cleanup() {
  [ -n "${BASELINE_PID:-}" ] && kill "$BASELINE_PID" 2>/dev/null || true
  [ -n "${CEILING_PID:-}" ] && kill "$CEILING_PID" 2>/dev/null || true
  bench/scripts/postgres.sh stop "$WORK/pg" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Starts a server that prints "switchboard listening on URL"; sets LISTEN_URL.
start_server() {
  local log=$1; shift
  "$@" >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    LISTEN_URL=$(grep -o 'switchboard listening on http://[0-9.:]*' "$log" | head -1 | awk '{print $4}') || true
    [ -n "$LISTEN_URL" ] && { STARTED_PID=$pid; return 0; }
    sleep 0.1
  done
  echo "server did not start: $*" >&2; cat "$log" >&2; exit 1
}

DB_URL=$(bench/scripts/postgres.sh start "$WORK/pg" "$PG_PORT")
start_server "$WORK/baseline.log" "$BIN/switchboard-baseline" --listen 127.0.0.1:0 --database-url "$DB_URL" \
  --graph-base-url "http://127.0.0.1:$SINK_PORT/v23.0" --access-token bench-access-token \
  --app-secret bench-app-secret --agents "$AGENTS" --capacity 1000
BASELINE_URL=$LISTEN_URL; BASELINE_PID=$STARTED_PID
start_server "$WORK/ceiling.log" "$BIN/switchboard-ceiling" server --listen 127.0.0.1:0 --app-secret bench-app-secret
CEILING_URL=$LISTEN_URL; CEILING_PID=$STARTED_PID

"$BIN/switchboard-bench" throughput --engine-bin "$BIN/switchboard" --steps "$STEPS" --keep-going \
  --duration "$DURATION" --agents "$AGENTS" --no-progress --sink-listen "127.0.0.1:$SINK_PORT" \
  --reference "baseline=$BASELINE_URL" --ingest-reference "ceiling=$CEILING_URL" \
  --json "$OUT/throughput.json" --markdown "$OUT/throughput.md" || true

for batch in 1 100 1000; do
  "$BIN/switchboard-ceiling" redb --dir "$WORK/redb-$batch" --records 200000 --batch "$batch" \
    --key-order sequential | tee -a "$OUT/redb.jsonl"
done
echo "results in $OUT"
