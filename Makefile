# swarmgen — make targets. `make demo` runs the main job, `make test` the tests.
SHELL := /bin/bash
GO ?= go
export GOFLAGS ?= -mod=mod
# go-nvml's cgo headers carry deprecation warnings that are not ours.
export CGO_CFLAGS ?= -Wno-deprecated-declarations
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
BIN := bin/swarmgen
FUZZTIME ?= 10s

.PHONY: build test test-go test-python fuzz bench lint demo pyenv proto docker-image clean

build: $(BIN)

$(BIN): $(shell find . -name '*.go' -not -path './.venv/*') go.mod go.sum
	$(GO) build -o $(BIN) ./cmd/swarmgen

# The Python environment for Stable Diffusion (CPU torch from PyPI is fine).
pyenv: $(VENV)/.installed
$(VENV)/.installed: inference/stablediffusion/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r inference/stablediffusion/requirements.txt
	touch $@

# Everything: Go tests with the race detector, a short run of every fuzz
# target, and the Python worker's tests.
test: build pyenv test-go fuzz test-python

test-go: build
	SWARMGEN_PYTHON=$(abspath $(PYTHON)) SWARMGEN_BINARY=$(abspath $(BIN)) \
		$(GO) test -race -count=1 -timeout 30m ./...
	# The 256 MB result transfer at full size (under -race it moves 32 MB).
	$(GO) test -count=1 -run 'TestFetchLarge' ./bucket

test-python: pyenv
	$(PYTHON) -m pytest -q inference/stablediffusion/tests

# Each fuzz target for FUZZTIME (go test -fuzz takes one target at a time).
# A target that fails is run again, up to twice: a crasher it found was
# written to testdata/fuzz and fails every rerun (its seed run comes
# first); Go's fuzzing coordinator losing a worker at the deadline on a
# loaded machine ("context deadline exceeded", no input written) does not,
# and it happened twice in a row to one target here.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
			echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
			for try in 1 2 3; do \
				if $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >/tmp/swarmgen-fuzz.log 2>&1; then break; fi; \
				cat /tmp/swarmgen-fuzz.log; \
				if [ $$try = 3 ]; then echo "FAIL fuzz $$pkg $$f"; exit 1; fi; \
				echo "fuzz $$pkg $$f failed (try $$try); running it again (a crasher it found is now in testdata/fuzz and fails again)"; \
			done; \
		done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./node/...
	$(GO) test -run '^$$' -bench . ./scheduler/... ./bucket/... ./inference/...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

# The main job: a 3-node devnet runs the example request body (5 Stable
# Diffusion images) and writes them to demo-output/.
demo: build pyenv
	./scripts/demo.sh

proto:
	cd protocol/pb && protoc -I. --go_out=. --go_opt=paths=source_relative swarmgen.proto

docker-image:
	docker build -t swarmgen:latest .

clean:
	rm -rf bin demo-output
