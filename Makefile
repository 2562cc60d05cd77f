# One command per concern. Every target creates/updates .venv first, so a fresh clone needs nothing
# installed by hand. Versions are pinned by cluster/requirements.txt (the same pins as the container
# image); torch is the CPU wheel here; on GPU images the CUDA build is installed first (cluster/Dockerfile)
# and `pip install -e .` keeps it (pyproject only asks for torch>=2.4).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_CPU ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint format bench bench-gpu clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile cluster/requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_CPU)"
	$(BIN)/python -m pip install -q -c cluster/requirements.txt -e ".[test]" "$(TORCH_CPU)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m rfnet.data.sample --out out/demo-catalog
	$(BIN)/reliable-ad generate --preset tiny --catalog out/demo-catalog/catalog.jsonl --out out/demo --max-attempts 3
	@echo
	@echo "Demo done. Look at out/demo/report.html (results: out/demo/results/, run summary: out/demo/run.json)."

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench.cpu_pipeline
	$(BIN)/python -m bench.rfnet_scoring

bench-gpu: $(STAMP)
	$(BIN)/python -m bench.gpu_generate

clean:
	rm -rf out bench/results/*.tmp .pytest_cache
