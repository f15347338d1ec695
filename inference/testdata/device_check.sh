#!/usr/bin/env bash
# Device check for the inference package on a GPU machine without a Go
# toolchain. Prebuild from the repo root:
#   CGO_ENABLED=0 go build -o inference/testdata/bin/testapp ./inference/testdata/testapp
#   go test -c -o inference/testdata/bin/inference.test ./inference/
# then run this script from the repo root. Writes results to $OUT if set.
set -u
out=${OUT:-/tmp}
cd "$(dirname "$0")/.." # the inference package dir: tests expect it as cwd
bin=$PWD/testdata/bin
{
  echo "== machine"; uname -a; nproc; nvidia-smi -L 2>&1 | head -4
  echo "== docker"; command -v docker || echo "no docker CLI"
  ls -la /var/run/docker.sock 2>&1
  docker info 2>&1 | grep -iE "server version|runtimes|default runtime|storage driver|cgroup" || true
} 2>&1 | tee "$out/machine.txt"
echo "== tests" | tee "$out/tests.txt"
SWARMGEN_TESTAPP=$bin/testapp SWARMGEN_TEST_GPU=1 timeout 300 "$bin/inference.test" -test.v -test.count=1 \
  -test.timeout 280s 2>&1 | grep -vE "^=== (RUN|PAUSE|CONT)" | tee -a "$out/tests.txt" | tail -60
echo "== benchmarks" | tee "$out/bench.txt"
SWARMGEN_TESTAPP=$bin/testapp timeout 120 "$bin/inference.test" -test.run XXX \
  -test.bench 'FractalDirect|ProcessNoop|InProcessNoop' -test.benchtime 2s -test.count 3 2>&1 | tee -a "$out/bench.txt"
