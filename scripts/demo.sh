#!/usr/bin/env bash
# make demo: a 3-node devnet runs examples/create-job.json (the platform's
# "create job" example, unchanged: 5 Stable Diffusion images) and writes the
# images with their metadata into demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin/swarmgen
PY=${SWARMGEN_PYTHON:-$ROOT/.venv/bin/python}
OUT=${DEMO_OUTPUT:-$ROOT/demo-output}
API=${DEMO_API:-127.0.0.1:5080}
GATEWAY=${DEMO_GATEWAY:-127.0.0.1:8080}
MODEL=stabilityai/sd-turbo

export SWARMGEN_PYTHON=$PY
export SWARMGEN_SDWORKER=$ROOT/inference/stablediffusion/worker.py

echo "== model: $MODEL"
if "$PY" inference/stablediffusion/resolve_model.py "$MODEL" >/dev/null 2>/tmp/swarmgen-demo-resolve.log; then
  echo "   $MODEL is available (local cache or Hugging Face Hub)"
else
  echo "   The Hugging Face Hub cannot be reached from this machine and $MODEL is not cached."
  echo "   Falling back to a tiny random-weight Stable Diffusion pipeline built locally:"
  echo "   the images will be noise, but every step of the run is real."
  TINY=$ROOT/.cache/tiny-sd
  if [ ! -f "$TINY/model_index.json" ]; then
    "$PY" inference/stablediffusion/make_tiny_pipeline.py "$TINY" >/dev/null
  fi
  export SWARMGEN_MODEL_MAP="$MODEL=$TINY"
fi

rm -rf "$OUT"
mkdir -p "$OUT"
LOG=$OUT/devnet.log
echo "== starting a 3-node devnet (API http://$API, gateway http://$GATEWAY; log: $LOG)"
"$BIN" devnet --nodes 3 --api "$API" --gateway "$GATEWAY" >"$LOG" 2>&1 &
DEVNET=$!
cleanup() { kill -INT "$DEVNET" 2>/dev/null && wait "$DEVNET" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 120); do
  if "$BIN" --api "$API" peers --json 2>/dev/null | grep -q peerId; then break; fi
  kill -0 "$DEVNET" 2>/dev/null || { echo "devnet exited:"; cat "$LOG"; exit 1; }
  sleep 0.5
done
"$BIN" --api "$API" peers

echo "== submitting examples/create-job.json"
"$BIN" --api "$API" job submit examples/create-job.json --wait --output "$OUT/images"
ID=$("$BIN" --api "$API" job list --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
URL=$("$BIN" --api "$API" job status "$ID" --json | "$PY" -c 'import json,sys; print((json.load(sys.stdin).get("bucket") or {}).get("url",""))')
echo
echo "== done: job $ID"
find "$OUT/images" -type f | sort | sed 's/^/   /'
echo "   gallery: $URL"
if [ -t 0 ]; then
  echo "   (the devnet keeps serving the gallery; press Enter to stop it)"
  read -r _ || true
fi
