# reasonpipe: `make demo` sets up and runs the bundled demo; `make test` sets up and runs the tests.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT := output/demo

.PHONY: setup demo test test-engines lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# CPU-only machines take the CPU build of torch first (a plain `torch` would pull a multi-GB CUDA build)
	if ! command -v nvidia-smi >/dev/null 2>&1 && ! command -v rocm-smi >/dev/null 2>&1; then \
		$(BIN)/pip install -q torch==2.13.0; fi
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/reasonpipe run manifests/demo.yaml
	$(BIN)/reasonpipe inspect $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

# Slurm (a running cluster: `sudo bash .ci/slurm-up.sh` starts a single-node one) and Ray end to end
test-engines: $(STAMP)
	$(BIN)/pip install -q -e '.[engines]'
	$(BIN)/python -m pytest -m engines tests/test_engines.py

bench: $(STAMP)
	$(BIN)/python bench/tokenize_pack.py
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/inspect_speed.py
	$(BIN)/python bench/model_step.py
	$(BIN)/python bench/model_step.py --shape matmul
	$(BIN)/python bench/decode_speed.py --presets tiny
	$(BIN)/python bench/generate_speed.py
	$(BIN)/python bench/long_context.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache
