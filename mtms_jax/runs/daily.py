"""Day by day: the paper's time slots (Sec. IV "Training and Testing").

Day T trains on days [T - window, T - 1] starting from day T-1's run, and tests on day T.
A validation day of its own (`config.validation.day`, set by a schema file's `valid` files:
train, valid, test are days 0, 1, 2) is neither: it scores every day's run for early
stopping and is skipped where training and test days are counted, so on such logs test day
2 with window 1 trains on day 0.
"""

from __future__ import annotations

import os

import ml_collections

from mtms_jax import errors, rundir
from mtms_jax.report import plots
from mtms_jax.train import trainer


def check(config: ml_collections.ConfigDict) -> None:
  """Raises UserError naming the `daily` field that is wrong: every day T needs `window`
  training days before it, from day 0 on (the validation day not counted), and some test day
  must not be the validation day."""
  daily, val_day = config.daily, config.validation.day
  errors.expect(daily.window >= 1, "config.daily.window", daily.window, ">= 1")
  skipped = 1 if 0 <= val_day < daily.first_test_day else 0
  errors.expect(daily.first_test_day - skipped >= daily.window, "config.daily.first_test_day",
                daily.first_test_day, f">= config.daily.window={daily.window} (its training "
                "days come before it, from day 0" + (f", and validation day {val_day} is not "
                                                     "one)" if skipped else ")"))
  errors.expect(daily.last_test_day >= daily.first_test_day, "config.daily.last_test_day",
                daily.last_test_day, f">= config.daily.first_test_day={daily.first_test_day}")
  errors.expect(test_days(config), "config.daily.last_test_day", daily.last_test_day,
                f"a test day other than validation day {val_day}")


def test_days(config: ml_collections.ConfigDict) -> list[int]:
  """daily.first_test_day..last_test_day without the validation day."""
  days = range(config.daily.first_test_day, config.daily.last_test_day + 1)
  return [day for day in days if day != config.validation.day]


def training_days(config: ml_collections.ConfigDict, test_day: int) -> tuple[int, ...]:
  """The `daily.window` days before `test_day` that are not the validation day."""
  before = [day for day in range(test_day) if day != config.validation.day]
  return tuple(before[-config.daily.window:])


# Day by day (the paper's time slots, Sec. IV "Training and Testing")
def day_configs(config: ml_collections.ConfigDict, workdir: str
                ) -> list[tuple[int, str, ml_collections.ConfigDict]]:
  """(test day T, its workdir, its config) for each of `test_days`.

  Day T trains on its `training_days` and tests on T. Its init_from is day T-1's run
  (the first day's is config.init_from), so with init_load=('embedding',) day T starts from
  day T-1's embeddings and a fresh ranking network.
  """
  check(config)
  base = config.to_dict()
  del base["daily"]
  runs, init_from = [], config.init_from
  for day in test_days(config):
    day_workdir = os.path.join(workdir, f"day{day}")
    day_config = ml_collections.ConfigDict({
        **base, "train_days": training_days(config, day), "test_day": day,
        "init_from": init_from})
    runs.append((day, day_workdir, day_config))
    init_from = day_workdir
  return runs


def train_day_by_day(config: ml_collections.ConfigDict, workdir: str, *,
                     save_predictions: bool = False) -> dict[str, float]:
  """Runs `day_configs`, each in `<workdir>/day<T>/` (finished days, by
  `rundir.finished_results`, are read back, not rerun); save_predictions as in
  `trainer.train_and_evaluate`, for every day.

  results.json holds every day's results under 'day<T>/' ('day5/test/scene0/cvr/auc') and the
  last day's again without the prefix; metrics_over_days.png plots test AUC per day.
  """
  rundir.write_config(workdir, config)
  results, days = {}, []
  for day, day_workdir, day_config in day_configs(config, workdir):
    day_results = rundir.finished_results(day_workdir, day_config)
    if day_results is None:
      day_results = trainer.train_and_evaluate(day_config, day_workdir,
                                               save_predictions=save_predictions)
    else:
      print(f"Day {day}: finished earlier, results read from "
            f"{rundir.path(day_workdir, rundir.RESULTS)}.")
    results.update({f"day{day}/{k}": v for k, v in day_results.items()})
    days.append(day)
  results.update(day_results)
  scenes = sorted({k.split("/")[1] for k in day_results if k.startswith("test/")} - {"all"})
  plots.metric_over_days(results, days, scenes + ["all"],
                         rundir.path(workdir, rundir.METRICS_OVER_DAYS))
  rundir.write_json(workdir, rundir.RESULTS, results)
  return results
