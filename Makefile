# Two commands a new user needs: `make experiment NAME=quickstart` and `make test`.
# Both create .venv with the pinned environment first if it is missing or stale.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NAME ?= quickstart
RUN ?=
ARGS ?=
WORKDIR := checkpoints/$(NAME)$(if $(RUN),/$(RUN),)

.PHONY: setup experiment test lint bench sweep clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

experiment: $(STAMP)
	$(PY) -m mtms_jax.main --config experiments/$(NAME).py --workdir $(WORKDIR) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest tests $(ARGS)

# Training throughput per model on a generated workload; writes bench.json (README, Performance).
bench: $(STAMP)
	$(PY) -m mtms_jax.bench $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check mtms_jax experiments tests

clean:
	rm -rf $(VENV) .pytest_cache
