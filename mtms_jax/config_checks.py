"""Every config mistake that the config alone shows, found before any data is loaded.

`check(config)` runs first in `python -m mtms_jax.main` and in the sweep command (there on
every point too) and raises UserError naming the first wrong key, e.g.
`config.phases.ranking.optimizer.name='adm': expected one of ['adagrad', 'adam', ...]`.
It walks the whole config: a single run's model, schedule and phases, or each comparison
row's (`config.compare.rows.<name>.model`, ...), and every section a run kind reads.

Where a module checks the values it uses when called without `mtms_jax.main` (a model's
fields, an optimizer, the parallel settings, the validation days, a run kind's section),
this calls that check, so that each mistake has one message; the choices are the modules'
own lists. The checks that need the data stay beside it and raise UserError before training:
the scenes that data.scenes, model.ranking_scenes, compare.scene and replay.user_field name,
the validation metrics the data can score (train/early_stopping.py), the days it has, and a
schema file's logs (data/logs, `logs.configure`, which runs right after this).
"""

from __future__ import annotations

import inspect
import os

import ml_collections
import numpy as np

from mtms_jax import errors, losses, models, optim, parallel, tasks
from mtms_jax.data import registry
from mtms_jax.errors import UserError
from mtms_jax.eval import metrics, validation
from mtms_jax.runs import add_scene, compare, daily, regime_map, replay
from mtms_jax.train import early_stopping, schedule

# Keys whose values must be > 0, or >= 0, wherever they appear in a config.
POSITIVE = ("batch_size", "eval_batch_size", "every_steps", "log_every", "keep",
            "rounds_per_day", "evals_per_epoch")
NON_NEGATIVE = ("min_steps", "min_eval_steps", "patience", "min_delta")
MODES = ("max", "min")       # of checkpoint.best_mode and sweep.mode
# The sections of run kinds (mtms_jax.runs), each checked by its own module.
SECTIONS = {"daily": daily.check, "add_scene": add_scene.check, "replay": replay.check,
            "regime_map": regime_map.check}


def check(config: ml_collections.ConfigDict) -> None:
  """Raises UserError naming the first wrong key of `config` (see the module docstring)."""
  check_numbers(config)
  check_data(config.data)
  init_load = tuple(config.init_load)
  if config.get("compare"):
    compare.check(config)
    for name in config.compare.order:
      row, where = config.compare.rows[name], f"config.compare.rows.{name}"
      check_run(row, where, init_load, len(config.train_days))
      check_scenes(f"{where}.scenes", row.scenes)
  else:
    check_run(config, "config", init_load, len(config.train_days))
  check_days(config)
  check_checkpoint(config.checkpoint)
  if config.init_from:
    errors.expect(os.path.exists(config.init_from), "config.init_from", config.init_from,
                  "a run folder or checkpoint that exists ('' for none)")
  parallel.check(config)
  for section, check_section in SECTIONS.items():
    if config.get(section):
      check_section(config)
  if config.get("quality"):
    epochs = tuple(config.quality.curve_epochs)
    errors.expect(all(e > 0 for e in epochs), "config.quality.curve_epochs", epochs,
                  "epochs > 0 (() for no curves)")
  if config.get("sweep"):
    check_sweep(config.sweep)


def check_numbers(config: ml_collections.ConfigDict, prefix: str = "config") -> None:
  """Sizes, counts and step numbers: a batch size of 0, a negative number of epochs or
  checkpoints every 0 steps would otherwise crash mid-run or loop silently."""
  for key, value in config.items():
    where = f"{prefix}.{key}"
    if isinstance(value, ml_collections.ConfigDict):
      check_numbers(value, where)
    elif key in POSITIVE and _number(value):
      errors.expect(value > 0, where, value, "> 0")
    elif key in NON_NEGATIVE and _number(value):
      errors.expect(value >= 0, where, value, ">= 0")
  steps = config.get("steps", 0)
  if _number(steps):
    errors.expect(steps >= 0, f"{prefix}.steps", steps, ">= 0 (0: use epochs)")
  epochs = config.get("epochs")
  if _number(epochs) and not steps:
    errors.expect(epochs > 0, f"{prefix}.epochs", epochs, f"> 0 (or set {prefix}.steps)")


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_data(data: ml_collections.ConfigDict, where: str = "config.data") -> None:
  """A data set that exists and takes the given arguments; a schema file replaces both and
  is checked when it is prepared."""
  if not data.get("schema"):
    load = registry.loader(data.name)
    try:
      kwargs = inspect.signature(load).bind(**(data.get("kwargs") or {}))
    except TypeError as e:
      raise UserError(f"{where}.kwargs: {e} (of mtms_jax.data.{data.name}.load)") from None
    # A data set that checks its arguments' values (mtms_jax/data/regimes.py), or that its
    # files exist (the public data sets: data/_tabular.py's Source), does it here too.
    check_kwargs = getattr(inspect.getmodule(load), "check_kwargs", None)
    if check_kwargs:
      kwargs.apply_defaults()
      check_kwargs(**kwargs.arguments)
  check_scenes(f"{where}.scenes", data.get("scenes", ()))


def check_scenes(key: str, scenes) -> None:
  """Scene indices; which exist is the data's to say (`registry.keep_scenes`)."""
  scenes = tuple(scenes)
  errors.expect(len(set(scenes)) == len(scenes) and all(s >= 0 for s in scenes), key, scenes,
                "distinct scene indices >= 0 (() for every scene)")


def check_run(run: ml_collections.ConfigDict, where: str, init_load: tuple[str, ...],
              num_train_days: int) -> None:
  """The model, schedule and phases of one run (`where`: the key that holds them)."""
  model = check_model(run.model, f"{where}.model")
  order = tuple(run.schedule.order)
  errors.expect(order, f"{where}.schedule.order", order, f"some of {list(model.phases)}")
  schedule.check(run.schedule, f"{where}.schedule", num_train_days)
  for i, phase in enumerate(order):
    errors.expect_choice(f"{where}.schedule.order[{i}]", phase, tuple(model.phases))
    if phase not in run.phases:
      raise UserError(f"{where}.phases has no {phase!r}, a phase of {where}.schedule.order")
    check_phase(run.phases[phase], f"{where}.phases.{phase}",
                trains_tables="embedding" in model.phases[phase])
    if run.phases[phase].early_stopping.get("per_component", False):
      early_stopping.check_per_component(model, run.model, phase, where)
  params = sorted({key for keys in model.phases.values() for key in keys})
  errors.expect(init_load and set(init_load) <= set(params), "config.init_load", init_load,
                f"a non-empty subset of the params' top-level keys {params}")


def check_model(model_config: ml_collections.ConfigDict, where: str):
  """The Model class of `model_config`, whose fields it checks (its `check_config`); a field
  it reads that the section lacks is a UserError naming it, for every model alike (e.g.
  `--config.model.name=mmoe` on a config whose model section is MTMS's)."""
  model = models.model_class(model_config.name, f"{where}.name")
  try:
    model.check_config(model_config, where)
  except (KeyError, AttributeError) as e:
    key, hint = errors.missing_config_key(e) or (None, "")
    if key is None or key in model_config:
      raise               # not a field of the section: a bug, with its traceback
    hint = f" ({hint})" if hint else ""
    raise UserError(
        f"{where}.{key}: missing; model {model_config.name!r} reads it{hint}. A model section "
        "holds every field of its model: set the model with its whole section "
        f"(experiments/common.py JOINT_MODELS has each joint model's), not {where}.name "
        "alone") from None
  return model


def check_phase(phase: ml_collections.ConfigDict, where: str, trains_tables: bool) -> None:
  """One phase's loss, regularisation, rows, optimizer and early stopping."""
  losses.parse_loss(phase.loss, f"{where}.loss")
  weights = dict(phase.get("loss_weights") or {})
  errors.expect(set(weights) <= set(tasks.ALL) and all(w >= 0 for w in weights.values()),
                f"{where}.loss_weights", weights, f"weights >= 0 of tasks in {tasks.ALL}")
  dropout = phase.get("dropout", 0.0)
  errors.expect(0 <= dropout < 1, f"{where}.dropout", dropout, "0 <= dropout < 1")
  rows = tuple(phase.get("rows", (0.0, 1.0)))
  errors.expect(len(rows) == 2 and 0 <= rows[0] < rows[1] <= 1, f"{where}.rows", rows,
                "0 <= start < stop <= 1, shares of each day's training rows")
  optim.check_config(phase.optimizer, f"{where}.optimizer", trains_tables)
  es = phase.early_stopping
  if es.metric != "loss":
    check_metric(f"{where}.early_stopping.metric", es.metric, ("val",))
  early_stopping.metric_mode(es.metric, es.mode)      # a known mode, or one it can infer
  min_rows = es.get("min_rows", 0)
  errors.expect(isinstance(min_rows, int) and min_rows >= 0, f"{where}.early_stopping.min_rows",
                min_rows, "an integer >= 0 (0: every component scored on its own rows)")


def check_metric(key: str, name: str, splits: tuple[str, ...]) -> None:
  """A metric key '<split>/<scene or all>/<task>/<metric>' of a report of one of `splits`;
  whether the scene exists is the data's to say."""
  parts = name.split("/")
  names = sorted(metrics.task_metrics(np.array([0.0, 1.0]), np.array([0.5, 0.5])))
  errors.expect(len(parts) == 4 and parts[0] in splits and parts[2] in tasks.ALL
                and parts[3] in names, key, name,
                f"'{splits[0]}/<scene or all>/<task>/<metric>' with task in {tasks.ALL} "
                f"and metric in {names}, e.g. '{splits[0]}/all/ctcvr/auc'")


def check_days(config: ml_collections.ConfigDict) -> None:
  """Training, test and validation days apart; a schema file sets them (`logs.configure`)."""
  if config.data.get("schema"):
    return
  days = tuple(config.train_days)
  errors.expect(days and len(set(days)) == len(days) and all(d >= 0 for d in days),
                "config.train_days", days, "distinct days >= 0, at least one")
  errors.expect(config.test_day >= 0, "config.test_day", config.test_day, "a day >= 0")
  validation.check(config)


def check_checkpoint(checkpoint: ml_collections.ConfigDict) -> None:
  errors.expect_choice("config.checkpoint.best_mode", checkpoint.best_mode, MODES)
  if checkpoint.best_metric:
    check_metric("config.checkpoint.best_metric", checkpoint.best_metric, ("val",))


def check_sweep(sweep: ml_collections.ConfigDict) -> None:
  """The metric a sweep's table is sorted by, and in which direction (runs/sweep.py)."""
  if sweep.metric != "train_steps":
    check_metric("config.sweep.metric", sweep.metric, ("test", "oracle"))
  errors.expect_choice("config.sweep.mode", sweep.mode, MODES)
