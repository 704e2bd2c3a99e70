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
STEP ?=
OUT ?=
OVERWRITE ?=

BIN := $(VENV)/bin
# The dyt-* commands are this package's console scripts (pyproject.toml); `make setup` installs the checkout
# into the venv (editable). PYTHONPATH keeps this checkout's code first even when the venv's scripts were
# installed from another checkout of the project.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
# GPU targets never install: the venv when there is one, else the machine's python3 (the GPU window,
# where wheels from `make gpu-wheels` are installed first; benchmarks/README.md).
GPU_PY ?= $(if $(wildcard $(VENV)/bin/python),$(PY),python3)

LAUNCH_FLAGS := $(if $(LAUNCHER),--launcher $(LAUNCHER)) $(if $(NODES),--nodes $(NODES))
# `make data LAUNCHER=slurm` prepares on SLURM; as a step of `make pretrain` the data is prepared here
# (up to date at once when `make data LAUNCHER=slurm NODES=N` built it before).
DATA_FLAGS := $(if $(filter data,$(MAKECMDGOALS)),$(LAUNCH_FLAGS))

.PHONY: help setup setup-gpu pretrain data test test-fast lint tensorboard clean-runs bench-kernels gpu-check gpu-bench gpu-wheels \
	bench-data compare bench-model scurve export verify-checkpoint bench-checkpoint

help:  ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "  variables: CONFIG=$(CONFIG) OVERRIDES=\"key=value ...\" LAUNCHER=local|slurm NODES=N"

setup:  ## create/refresh .venv (pinned torch, megatron-core, deepspeed, ..., this package); no-op when up to date
	@bash scripts/setup_venv.sh

setup-gpu: setup  ## add the optional GPU extras (Liger-Kernel, Transformer Engine; needs CUDA and its toolkit)
	$(PY) -m pip install --no-build-isolation -r requirements/gpu.txt

pretrain: setup data  ## prepare data and train CONFIG (default tiny_dyt) with OVERRIDES
	$(BIN)/dyt-pretrain $(CONFIG) $(OVERRIDES) $(LAUNCH_FLAGS)

data: setup  ## build CONFIG's data (tokenizer + .bin/.idx shards + manifest); LAUNCHER=slurm NODES=N: N shards
	$(BIN)/dyt-data $(CONFIG) $(OVERRIDES) $(DATA_FLAGS)

test: setup  ## the full test suite (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup  ## the suite without the slow multi-process tests
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup  ## ruff
	$(BIN)/ruff check .

compare: CONFIG = compare/tiny
compare: setup  ## train a compare config's variants × seeds (finished runs reused); report in reports/<name>/
	$(BIN)/dyt-eval compare $(CONFIG) $(if $(LAUNCHER),--launcher $(LAUNCHER))

bench-model: setup data  ## wall-clock of the norm layers alone and the whole model per norm, at CONFIG's shapes
	$(BIN)/dyt-eval bench $(CONFIG) $(OVERRIDES)

scurve: setup  ## S-curves of a LayerNorm/RMSNorm run, or α over training of a DyT run (RUN=<run dir>)
	$(BIN)/dyt-eval scurve $(RUN)

export: setup  ## a run's checkpoint as a Hugging Face folder: RUN=runs/<name> [STEP=N] [OUT=dir] [OVERWRITE=1]
	@test -n "$(RUN)" || { echo "usage: make export RUN=runs/<name> [STEP=N] [OUT=dir] [OVERWRITE=1]" >&2; exit 2; }
	$(BIN)/dyt-export $(RUN) $(if $(STEP),--step $(STEP)) $(if $(OUT),--out $(OUT)) $(if $(OVERWRITE),--overwrite)

bench-kernels: setup  ## DyT kernel benchmark (GPU: ours/eager/compile/Liger/TE RMSNorm; CPU: eager vs compile)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) benchmarks/bench_kernels.py $(BENCH_ARGS)

gpu-check:  ## one-command GPU check of the kernels (< 8 min on one H200); writes benchmarks/results/kernels/
	$(GPU_PY) benchmarks/gpu_check.py

gpu-bench:  ## end-to-end DyT vs RMSNorm step time + MFU at 8B/70B layer shapes (< 9 min, one GPU); BENCH_ARGS
	$(GPU_PY) benchmarks/gpu_e2e.py $(BENCH_ARGS)

gpu-wheels: setup  ## download the wheels the offline GPU machine lacks into .gpu-wheels/ (to carry there)
	PYTHON=$(PY) bash scripts/gpu_wheels.sh

bench-data: setup  ## data prep throughput (MEGATRON_LM=<checkout>: side by side with its preprocess_data.py)
	$(PY) benchmarks/bench_data.py $(if $(MEGATRON_LM),--megatron-lm $(MEGATRON_LM)) $(BENCH_ARGS)

verify-checkpoint: setup  ## check every checkpoint of RUN=<run dir> (files, sizes, CRC-32) without loading a model
	$(PY) -m pipeline.checkpoint verify $(RUN)

bench-checkpoint: setup data  ## training stall per checkpoint save, synchronous vs asynchronous (CONFIG's model)
	$(PY) benchmarks/bench_checkpoint.py --config $(CONFIG) $(BENCH_ARGS)

tensorboard: setup  ## TensorBoard over every run in runs/
	$(BIN)/tensorboard --logdir runs --port $${PORT:-6006}

clean-runs:  ## delete runs/ (checkpoints, logs)
	rm -rf runs
