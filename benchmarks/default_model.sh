#!/usr/bin/env bash
# Decode throughput of the torch engine on the embedded default model, and what the facade adds.
#
#   benchmarks/default_model.sh [OUT_DIR]
#
# 1. gRPC straight to the inference service: batch-1 decode tokens/s, then total tokens/s with
#    8 and 32 concurrent streams (issue: 8 streams must give >= 4x the batch-1 total).
# 2. The same Generate traffic through the facade (REST/SSE) at 1 and 64 concurrent streams:
#    time to first token and inter-token latency added by the facade.
# Every request asks for exactly OUT tokens (ignore_eos) so runs are comparable.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-benchmarks/results}
OUT=${OUT:-64}
mkdir -p "$OUT_DIR"
BIN=.venv/bin
GRPC_PORT=${GRPC_PORT:-50151}
HTTP_PORT=${HTTP_PORT:-8151}
KEY=bench-key

$BIN/tensorchat --log-level warning inference --port "$GRPC_PORT" &
INFERENCE=$!
TENSORCHAT_API_KEYS=$KEY $BIN/tensorchat --log-level warning facade \
  --backends "127.0.0.1:$GRPC_PORT" --port "$HTTP_PORT" &
FACADE=$!
trap 'kill $INFERENCE $FACADE 2>/dev/null; wait 2>/dev/null' EXIT
until curl -sf "http://127.0.0.1:$HTTP_PORT/health" >/dev/null; do sleep 1; done

common=(--model default --prompt-tokens 32 --output-tokens "$OUT" --ignore-eos --temperature 0 --no-progress)
# Warm the model up (first forward passes allocate).
$BIN/tensorchat bench --grpc "127.0.0.1:$GRPC_PORT" "${common[@]}" --concurrency 1 --num-requests 2 >/dev/null

for c in 1 8 32; do
  $BIN/tensorchat bench --grpc "127.0.0.1:$GRPC_PORT" "${common[@]}" \
    --concurrency "$c" --num-requests $((c * 3)) --json "$OUT_DIR/grpc-c$c.json"
done
for c in 1 64; do
  n=$(( c == 1 ? 4 : c ))
  $BIN/tensorchat bench --grpc "127.0.0.1:$GRPC_PORT" "${common[@]}" \
    --concurrency "$c" --num-requests "$n" --json "$OUT_DIR/facade-base-grpc-c$c.json"
  $BIN/tensorchat bench --url "http://127.0.0.1:$HTTP_PORT/v1" --api-key "$KEY" "${common[@]}" \
    --concurrency "$c" --num-requests "$n" --json "$OUT_DIR/facade-rest-c$c.json"
done
