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
MEGATRON_LM ?=
RUN ?=

LAUNCH_FLAGS := $(if $(LAUNCHER),--launcher $(LAUNCHER)) $(if $(NODES),--nodes $(NODES))
# `make data LAUNCHER=slurm` prepares on SLURM; as a step of `make pretrain` the data is prepared here
# (up to date at once when `make data LAUNCHER=slurm NODES=N` built it before).
DATA_FLAGS := $(if $(filter data,$(MAKECMDGOALS)),$(LAUNCH_FLAGS))

.PHONY: help setup pretrain data test test-fast lint tensorboard clean-runs bench-kernels gpu-check bench-data compare bench-model scurve

help:  ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "  variables: CONFIG=$(CONFIG) OVERRIDES=\"key=value ...\" LAUNCHER=local|slurm NODES=N"

setup:  ## create/refresh .venv (pinned torch, megatron-core, deepspeed, ...); no-op when up to date
	@bash scripts/setup_venv.sh

pretrain: setup data  ## prepare data and train CONFIG (default tiny_dyt) with OVERRIDES
	$(PY) -m launch $(CONFIG) $(OVERRIDES) $(LAUNCH_FLAGS)

data: setup  ## build CONFIG's data (tokenizer + .bin/.idx shards + manifest); LAUNCHER=slurm NODES=N: N shards
	$(PY) -m launch.data $(CONFIG) $(OVERRIDES) $(DATA_FLAGS)

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

gpu-check: setup  ## one-command GPU check of the kernels (< 8 min on one H200); writes benchmarks/results/kernels/
	$(PY) benchmarks/gpu_check.py

bench-data: setup  ## data prep throughput (MEGATRON_LM=<checkout>: side by side with its preprocess_data.py)
	$(PY) benchmarks/bench_data.py $(if $(MEGATRON_LM),--megatron-lm $(MEGATRON_LM)) $(BENCH_ARGS)

tensorboard: setup  ## TensorBoard over every run in runs/
	$(VENV)/bin/tensorboard --logdir runs --port $${PORT:-6006}

clean-runs:  ## delete runs/ (checkpoints, logs)
	rm -rf runs
