# DyT pretraining pipeline. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= tiny_dyt
OVERRIDES ?=
LAUNCHER ?=
NODES ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=
RUN ?=

# GPU targets never install: the venv when there is one, else the machine's python3 (the GPU window,
# where wheels from `make gpu-wheels` are installed first; benchmarks/README.md).
GPU_PY ?= $(if $(wildcard $(VENV)/bin/python),$(PY),python3)

LAUNCH_FLAGS := $(if $(LAUNCHER),--launcher $(LAUNCHER)) $(if $(NODES),--nodes $(NODES))
OVERRIDE_FLAGS := $(foreach o,$(OVERRIDES),--override $(o))

.PHONY: help setup pretrain data test test-fast lint tensorboard clean-runs bench-kernels gpu-check gpu-bench gpu-wheels \
	bench-data compare bench-model scurve

help:  ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "  variables: CONFIG=$(CONFIG) OVERRIDES=\"key=value ...\" LAUNCHER=local|slurm NODES=N"

setup:  ## create/refresh .venv (pinned torch, megatron-core, deepspeed, ...); no-op when up to date
	@bash scripts/setup_venv.sh

pretrain: setup data  ## prepare data and train CONFIG (default tiny_dyt) with OVERRIDES
	$(PY) -m launch $(CONFIG) $(OVERRIDES) $(LAUNCH_FLAGS)

data: setup  ## build CONFIG's data (tokenizer + .bin/.idx shards + manifest); no-op when up to date
	$(PY) -m data_prep --config $(CONFIG) $(OVERRIDE_FLAGS)

test: setup  ## the full test suite (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup  ## the suite without the slow multi-process tests
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup  ## ruff
	$(VENV)/bin/ruff check .

compare: CONFIG = compare/tiny
compare: setup  ## train a compare config's variants × seeds (finished runs reused); report in reports/<name>/
	$(PY) -m pipeline.evaluation compare $(CONFIG) $(if $(LAUNCHER),--launcher $(LAUNCHER))

bench-model: setup data  ## wall-clock of the norm layers alone and the whole model per norm, at CONFIG's shapes
	$(PY) -m pipeline.evaluation bench $(CONFIG) $(OVERRIDES)

scurve: setup  ## S-curves of a LayerNorm/RMSNorm run, or α over training of a DyT run (RUN=<run dir>)
	$(PY) -m pipeline.evaluation scurve $(RUN)

bench-kernels: setup  ## DyT kernel benchmark (GPU: ours/eager/compile/Liger/TE RMSNorm; CPU: eager vs compile)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) benchmarks/bench_kernels.py $(BENCH_ARGS)

gpu-check:  ## one-command GPU check of the kernels (< 8 min on one H200); writes benchmarks/results/kernels/
	$(GPU_PY) benchmarks/gpu_check.py

gpu-bench:  ## end-to-end DyT vs RMSNorm step time + MFU at 8B/70B layer shapes (< 9 min, one GPU); BENCH_ARGS
	$(GPU_PY) benchmarks/gpu_e2e.py $(BENCH_ARGS)

gpu-wheels: setup  ## download the wheels the offline GPU machine lacks into .gpu-wheels/ (to carry there)
	PYTHON=$(PY) bash scripts/gpu_wheels.sh

bench-data: setup  ## data prep throughput: data_prep workers vs a single-process baseline (generated corpus)
	$(PY) benchmarks/bench_data.py $(BENCH_ARGS)

tensorboard: setup  ## TensorBoard over every run in runs/
	$(VENV)/bin/tensorboard --logdir runs --port $${PORT:-6006}

clean-runs:  ## delete runs/ (checkpoints, logs)
	rm -rf runs
