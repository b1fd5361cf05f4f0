# Routine actions. `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_ARGS ?= --trials 40 --budget 2m30s

.PHONY: dashboard-shot install run test test-fast lint format bench bench-quick bench-noise bad-inputs bench-budget clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Tune the bundled example model on ONNX Runtime (CPU) in the foreground, from scratch.
run: install
	rm -rf results/example
	$(BIN)/autotune start examples/example.onnx --study example --foreground $(RUN_ARGS)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check autotune tests bench examples
	$(BIN)/ruff format --check autotune tests bench examples
	$(BIN)/mypy autotune

format: install
	$(BIN)/ruff format autotune tests bench examples
	$(BIN)/ruff check --fix autotune tests bench examples

# Benchmarks: never run by CI. QUICK=1 for the short version.
bench: install
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/run_all.py $(if $(QUICK),--quick,)
	$(BIN)/python bench/overhead.py $(if $(QUICK),--model examples/example.onnx,)

# A/A noise of the paired comparison (old vs new procedure; rapidocr's trained OCR models).
bench-noise: install
	$(BIN)/python -m pip install -q --no-deps 'rapidocr-onnxruntime>=1.4'
	$(BIN)/python bench/noise.py --alternatives --out bench/NOISE.md

# Every bad input in bench/bad_inputs.py through the console script; rewrites bench/BAD_INPUTS.md.
# --budget as the wall time of the whole study (issue 26): bench/BUDGET.md.
bench-budget: install
	$(BIN)/python bench/budget.py --out bench/BUDGET.md

bad-inputs: install
	$(BIN)/python bench/bad_inputs.py --out bench/BAD_INPUTS.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache results/*/ build *.egg-info

# A headless-Chromium screenshot of the dashboard on the `make run` study (apt-get install chromium).
dashboard-shot: install
	$(BIN)/python bench/dashboard_shot.py results example --out bench/dashboard.png
