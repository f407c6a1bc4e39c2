"""Day by day: the paper's time slots (Sec. IV "Training and Testing").

Day T trains on days [T - window, T - 1] starting from day T-1's run, and tests on day T.
"""

from __future__ import annotations

import json
import os
import ml_collections
from mtms_jax import parallel
from mtms_jax.report import plots
from mtms_jax import rundir
from mtms_jax.train import trainer


# Day by day (the paper's time slots, Sec. IV "Training and Testing")
def day_configs(config: ml_collections.ConfigDict, workdir: str
                ) -> list[tuple[int, str, ml_collections.ConfigDict]]:
  """(test day T, its workdir, its config) for each T in daily.first_test_day..last_test_day.

  Day T trains on days [T - window, T - 1] and tests on T. Its init_from is day T-1's run
  (the first day's is config.init_from), so with init_load=('embedding',) day T starts from
  day T-1's embeddings and a fresh ranking network.
  """
  daily = config.daily
  if daily.window < 1 or daily.last_test_day < daily.first_test_day:
    raise ValueError(f"config.daily={daily.to_dict()}: expected window >= 1 and "
                     "first_test_day <= last_test_day")
  base = config.to_dict()
  del base["daily"]
  runs, init_from = [], config.init_from
  for day in range(daily.first_test_day, daily.last_test_day + 1):
    day_workdir = os.path.join(workdir, f"day{day}")
    day_config = ml_collections.ConfigDict({
        **base, "train_days": tuple(range(day - daily.window, day)), "test_day": day,
        "init_from": init_from})
    runs.append((day, day_workdir, day_config))
    init_from = day_workdir
  return runs


def train_day_by_day(config: ml_collections.ConfigDict, workdir: str, *,
                     save_predictions: bool = False) -> dict[str, float]:
  """Runs `day_configs`, each in `<workdir>/day<T>/` (finished days are read back, not rerun);
  save_predictions as in `trainer.train_and_evaluate`, for every day.

  results.json holds every day's results under 'day<T>/' ('day5/test/scene0/cvr/auc') and the
  last day's again without the prefix; metrics_over_days.png plots test AUC per day.
  """
  logdir = parallel.log_dir(workdir)      # as in trainer.train_and_evaluate
  os.makedirs(logdir, exist_ok=True)
  with open(os.path.join(logdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  results, days = {}, []
  for day, day_workdir, day_config in day_configs(config, workdir):
    finished = os.path.join(parallel.log_dir(day_workdir), "results.json")
    if os.path.exists(finished):
      with open(finished) as f:
        day_results = json.load(f)
      print(f"Day {day}: finished earlier, results read from {finished}.")
    else:
      day_results = trainer.train_and_evaluate(day_config, day_workdir,
                                               save_predictions=save_predictions)
    results.update({f"day{day}/{k}": v for k, v in day_results.items()})
    days.append(day)
  results.update(day_results)
  rundir.write_atomically(os.path.join(logdir, "results.json"),
                   json.dumps(results, indent=2, sort_keys=True))
  scenes = sorted({k.split("/")[1] for k in day_results if k.startswith("test/")} - {"all"})
  plots.metric_over_days(results, days, scenes + ["all"],
                         os.path.join(logdir, "metrics_over_days.png"))
  return results
