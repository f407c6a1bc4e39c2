"""Run kinds: every kind of run, how it is chosen, and the function that runs it.

Chosen by the config's sections (`run(config, workdir)`, what `python -m mtms_jax.main`
calls): the kinds are tried in order, the first whose section the config has wins (a
regime map, quality or replay config is a comparison config with one more section).
Comparisons and sweeps run many training runs, each through `run_one`, which knows the kinds
of one run only (the runs of a comparison keep its sections in their configs):

  regime_map a comparison per cell of a grid of data        runs/regime_map.py
  quality    every model at defaults against the oracle      runs/quality.py
  replay     auction replay of comparison runs               runs/replay.py
  compare    several models x seeds, one table               runs/compare.py
  daily      the paper's day-by-day protocol                 runs/daily.py
  add_scene  scenes added to a trained run                   runs/add_scene.py
  single     one training run (none of the above)            train/trainer.py

Chosen by its command (`make sweep`, `python -m mtms_jax.runs.sweep`, which calls
`run_sweep`), since its points come from the experiment file's `get_hyper`, not its config:

  sweep      the points of get_hyper, each a run of its kind  runs/sweep.py

Each of these holds the workdir's lock while it runs (`rundir.locked`: one run per workdir;
a comparison's or sweep's runs lock their own folders inside it).

Entries are import paths, resolved when a run starts (big_vision's registries), so the
run kinds can import this module without a cycle.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import ml_collections

from mtms_jax import rundir


class Kind(NamedTuple):
  name: str          # also the config section that chooses it, for those chosen so
  module: str
  function: str      # module.function(config, workdir, ...) runs it


MANY_RUNS = (
    Kind("regime_map", "mtms_jax.runs.regime_map", "run"),
    Kind("quality", "mtms_jax.runs.quality", "run"),
    Kind("replay", "mtms_jax.runs.replay", "run"),
    Kind("compare", "mtms_jax.runs.compare", "run"),
)
ONE_RUN = (
    Kind("daily", "mtms_jax.runs.daily", "train_day_by_day"),
    Kind("add_scene", "mtms_jax.runs.add_scene", "train_with_added_scenes"),
)
SINGLE = Kind("single", "mtms_jax.train.trainer", "train_and_evaluate")
SWEEP = Kind("sweep", "mtms_jax.runs.sweep", "run_sweep")


def kind(config: ml_collections.ConfigDict, kinds=MANY_RUNS + ONE_RUN) -> Kind:
  """The first of `kinds` whose section `config` has, else SINGLE."""
  for entry in kinds:
    if config.get(entry.name):
      return entry
  return SINGLE


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs `config` into `workdir` as its kind; returns its flat results (results.json)."""
  with rundir.locked(workdir):
    return _call(kind(config), config, workdir)


def run_one(config: ml_collections.ConfigDict, workdir: str, **options) -> dict[str, float]:
  """One run of a comparison or sweep: day by day, with added scenes, or a single run;
  `options` go to its function (save_predictions)."""
  with rundir.locked(workdir):
    return _call(kind(config, ONE_RUN), config, workdir, **options)


def run_sweep(config: ml_collections.ConfigDict, points: list[dict], workdir: str,
              source: str) -> list[dict]:
  """The sweep of `points` ({config key: value} each) of the experiment file `source`, a
  run of `config` each in `workdir/<point>/`; returns the sweep table's rows."""
  with rundir.locked(workdir):
    return _call(SWEEP, config, points, workdir, source)


def _call(entry: Kind, *args, **options):
  return getattr(importlib.import_module(entry.module), entry.function)(*args, **options)
