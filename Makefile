# Two commands a new user needs: `make experiment NAME=quickstart` and `make test`.
# Both create .venv with the pinned environment first if it is missing or stale.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NAME ?= quickstart
RUN ?=
ARG ?=
ARGS ?=
WORKDIR := checkpoints/$(NAME)$(if $(RUN),/$(RUN),)
# ARG goes to the experiment's get_config(ARG), e.g. ARG=smoke.
CONFIG := experiments/$(NAME).py$(if $(ARG),:$(ARG),)
# glibc malloc for training: transparent huge pages for the tables (= benchmarks.bench.
# MALLOC_TUNABLES, which says why).
MALLOC_TUNABLES := glibc.malloc.hugetlb=1
TRAIN_ENV := GLIBC_TUNABLES=$(MALLOC_TUNABLES)

# Native CPU kernels (mtms_jax/models/kernels), compiled for this machine. Without a C++ compiler
# the build warns and the models use their XLA routes (mtms_jax.models.kernels.available()).
KERNELS := mtms_jax/models/kernels/_build/libscene_matmul.so

.PHONY: setup experiment multihost test lint bench bench-gpu bench-logs bench-serving export sweep quality data known-experiment clean

setup: $(STAMP) $(KERNELS)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

$(KERNELS): mtms_jax/models/kernels/scene_matmul.cc $(STAMP)
	$(PY) -m mtms_jax.models.kernels || echo "WARNING: native kernels not built; using XLA routes"

# An unknown NAME lists the experiments instead of failing inside the config loader.
known-experiment:
	@test -f experiments/$(NAME).py || { echo "error: unknown experiment NAME=$(NAME); known:" \
	  $(filter-out __init__ common,$(basename $(notdir $(wildcard experiments/*.py)))) >&2; exit 2; }

experiment: known-experiment $(STAMP) $(KERNELS)
	$(TRAIN_ENV) $(PY) -m mtms_jax.main --config $(CONFIG) --workdir $(WORKDIR) $(ARGS)

# PROCS local processes of DEVICES CPU devices each, as one multi-process run (mode=mesh),
# e.g. make multihost NAME=quickstart ARG=smoke PROCS=2: a test of multi-host training on one
# machine (docs/SCALING.md launches real clusters).
PROCS ?= 2
DEVICES ?= 2
multihost: $(STAMP) $(KERNELS)
	$(TRAIN_ENV) $(PY) -m mtms_jax.launch --processes=$(PROCS) --devices=$(DEVICES) -- \
	  --config $(CONFIG) --workdir $(WORKDIR)/multihost $(ARGS)

# Every point of the experiment's get_hyper in checkpoints/NAME/sweep/<point>/, then the
# sweep table (sweep.csv, sweep.md, sweep.png) there. Rerun to finish an interrupted sweep.
sweep: known-experiment $(STAMP) $(KERNELS)
	$(TRAIN_ENV) $(PY) -m mtms_jax.runs.sweep --config $(CONFIG) --workdir checkpoints/$(NAME)/sweep $(ARGS)

# The suite in TEST_WORKERS processes (pytest-xdist), each test file whole in one of them (its
# module fixtures trained once); the session's shared smoke runs are trained once
# for all workers (tests/conftest.trained_once).
TEST_WORKERS ?= 2
test: $(STAMP) $(KERNELS)
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile $(ARGS)

# Training throughput per model on a generated workload; writes bench.json (README, Performance).
bench: $(STAMP) $(KERNELS)
	$(TRAIN_ENV) $(PY) -m benchmarks.bench $(ARGS)

# On a machine with an NVIDIA GPU: its own .venv-gpu with the CUDA build of the pinned jax,
# then the bench at batch 2048, 16384 and 65536 (benchmarks/bench_gpu.py), within 8 minutes;
# writes bench_gpu.json and bench_gpu.md. Without a GPU it says so and stops (exit 2).
bench-gpu:
	bash benchmarks/bench_gpu.sh $(ARGS)

# The serving artifact of checkpoints/NAME[/RUN] in exported/NAME[/RUN] (mtms_jax/serving/export.py),
# and its scoring latency on this CPU (README, Export and serving).
EXPORTED := exported/$(NAME)$(if $(RUN),/$(RUN),)
export: $(STAMP) $(KERNELS)
	$(PY) -m mtms_jax.export --workdir $(WORKDIR) --out $(EXPORTED) $(ARGS)

bench-serving: $(STAMP)
	$(PY) -m mtms_jax.serving.bench --exported $(EXPORTED) $(ARGS)

# Bigger than RAM: a 50M-row, 20-field log prepared into DIR and trained from its memory-mapped
# cache, against an in-memory copy; writes bench_logs.json (README, Your own logs). ~10 GB in DIR.
bench-logs: $(STAMP) $(KERNELS)
	$(TRAIN_ENV) $(PY) -m benchmarks.bench_logs --dir $(DIR) $(ARGS)

# Every model at its defaults on held-out rows of a workload with a known oracle, plus
# epoch curves; writes checkpoints/quality/quality.md (README, Quality). Rerun to resume.
quality: $(STAMP) $(KERNELS)
	$(TRAIN_ENV) $(PY) -m mtms_jax.main --config experiments/quality.py$(if $(ARG),:$(ARG),) --workdir checkpoints/quality$(if $(RUN),/$(RUN),) $(ARGS)

# Checks the logs of schema file SCHEMA and writes their cache (README, Your own logs);
# training on --config.data.schema=SCHEMA does it too, when the cache is not up to date.
data: $(STAMP)
	$(PY) -m mtms_jax.data.logs.prepare $(SCHEMA)

lint: $(STAMP)
	$(VENV)/bin/ruff check mtms_jax experiments tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache mtms_jax/models/kernels/_build
