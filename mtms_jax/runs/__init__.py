"""Run kinds: what a config asks for, by the section it has, and the function that runs it.

`run(config, workdir)` is what `python -m mtms_jax.main` calls. Kinds are tried in order,
the first whose section the config has wins (a quality or replay config is a comparison
config with one more section). The first three run many training runs, each through
`run_one`, which knows the kinds of one run only (the runs of a comparison keep its
sections in their configs):

  quality    every model at defaults against the oracle      runs/quality.py
  replay     auction replay of comparison runs               runs/replay.py
  compare    several models x seeds, one table               runs/compare.py
  daily      the paper's day-by-day protocol                 runs/daily.py
  add_scene  scenes added to a trained run                   runs/add_scene.py
  single     one training run (none of the above)            train/trainer.py
A sweep (runs/sweep.py, `make sweep`) runs the points of an experiment's `get_hyper`, each
through `run_one`.

Entries are import paths, resolved when a run starts (big_vision's registries), so the
run kinds can import this module without a cycle.
"""

from __future__ import annotations

import importlib

import ml_collections

MANY_RUNS = (
    ("quality", "mtms_jax.runs.quality", "run"),
    ("replay", "mtms_jax.runs.replay", "run"),
    ("compare", "mtms_jax.runs.compare", "run"),
)
ONE_RUN = (
    ("daily", "mtms_jax.runs.daily", "train_day_by_day"),
    ("add_scene", "mtms_jax.runs.add_scene", "train_with_added_scenes"),
)
SINGLE = ("single", "mtms_jax.train.trainer", "train_and_evaluate")


def kind(config: ml_collections.ConfigDict, kinds=MANY_RUNS + ONE_RUN) -> tuple[str, str, str]:
  """(name, module, function) of the first of `kinds` whose section `config` has."""
  for entry in kinds:
    if config.get(entry[0]):
      return entry
  return SINGLE


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs `config` into `workdir` as its kind; returns its flat results (results.json)."""
  return _call(kind(config), config, workdir)


def run_one(config: ml_collections.ConfigDict, workdir: str, **options) -> dict[str, float]:
  """One run of a comparison or sweep: day by day, with added scenes, or a single run;
  `options` go to its function (save_predictions)."""
  return _call(kind(config, ONE_RUN), config, workdir, **options)


def _call(entry: tuple[str, str, str], config: ml_collections.ConfigDict, workdir: str,
          **options):
  _, module, function = entry
  return getattr(importlib.import_module(module), function)(config, workdir, **options)
