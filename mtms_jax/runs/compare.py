"""Comparison runs: several models, several seeds each, one table with paired tests.

The paper's Tables I and II compare a handful of models on one test day, and the gains are
fractions of a percent of AUC. So every model is trained with several seeds, the table shows
mean ± std over seeds, and every difference against the baseline carries a paired test on
the same test rows.

A comparison config is an experiment config whose model, schedule and phases are per row:

  data, train_days, test_day, batch_size, eval_batch_size, log_every, seed   shared by rows
  compare.rows.<name>   label, model, schedule, phases, and scenes (the data.scenes of the
                        row: () for all scenes, (0,) for a one-scene model)
  compare.order         the rows to run, in table order (ConfigDict sorts keys); naming a
                        subset runs only those, e.g. --config.compare.order='("baseline","mmoe")'
  compare.baseline      the row the others are measured against
  compare.seeds         seeds per row: config.seed + 0, 1, ..., seeds - 1
  compare.scene         the scene the table reports, by name ('scene0')
  compare.tasks, compare.metrics   what the table shows, e.g. ('cvr',) and ('mae', 'auc')
  compare.layout        'rows' (one model per row, paper Table I) or 'columns' (Table II)
  compare.title

`run(config, workdir)` trains each (row, seed) as a run of its kind (`runs.run_one`) in
`workdir/<row>/seed<k>/`, or reuses that folder when its run of the same config has finished
(`rundir.finished_results`: a rerun trains only what is missing; a folder left by a
different config is an error), then writes table.md, table.csv, table.png and results.json
to `workdir`.

results.json keys, for every row and every metric of the runs' results:
  '<row>/test/<scene>/<task>/<metric>_mean', '..._std' (sample std over seeds);
and for the table's scene, tasks and metrics:
  '..._seed<k>'      each seed's value;
  '..._delta'        relative change of the mean against the baseline's mean;
  '..._p'            p of the paired test of the seed-averaged predictions (below);
  '..._p_seed_min', '..._p_seed_max'   range of the per-seed p's (seed k vs baseline seed k);
  '..._p_seeds'      Welch's t-test of the per-seed values against the baseline's;
  '..._ensemble'     the metric of the seed-averaged predictions.

Significance, chosen as follows. AUC: DeLong's test; MAE: a paired t-test on per-row
absolute errors (`significance.py`). The headline p compares the seed-averaged predictions
(the mean probability over seeds, per row) of a row and of the baseline: averaging removes
most of the seed noise from each side, so the test asks whether the two models rank these
test rows differently. The per-seed range shows how much a single training run can be
trusted. Neither covers the seed-to-seed spread of training itself: Welch's t-test on the
per-seed values does (with few seeds it is weak, but it is the one that says whether
retraining would keep the order).
"""

from __future__ import annotations

import contextlib
import os
import time

import jax
import ml_collections
import numpy as np
from jax.experimental.compilation_cache import compilation_cache
from scipy import stats

from mtms_jax import errors, rundir, runs, tasks
from mtms_jax.errors import UserError
from mtms_jax.eval import metrics, significance
from mtms_jax.report import tables

LAYOUTS = ("rows", "columns")
METRICS = ("auc", "mae", "logloss", "calibration")   # what a table can show
TESTS = {"auc": significance.delong, "mae": significance.paired_mae}


def check(config: ml_collections.ConfigDict) -> None:
  """Raises UserError naming the `compare` field that is wrong (the rows' own sections are
  `config_checks`'s: they are those of any run)."""
  c = config.compare
  errors.expect(len(set(c.order)) == len(c.order) and set(c.order) <= set(c.rows),
                "config.compare.order", tuple(c.order), f"distinct names of rows {sorted(c.rows)}")
  errors.expect_choice("config.compare.baseline", c.baseline, tuple(c.order))
  errors.expect(c.seeds >= 1, "config.compare.seeds", c.seeds, ">= 1")
  errors.expect_choice("config.compare.layout", c.layout, LAYOUTS)
  errors.expect(c.tasks and set(c.tasks) <= set(tasks.ALL), "config.compare.tasks",
                tuple(c.tasks), f"some of {tasks.ALL}")
  errors.expect(c.metrics and set(c.metrics) <= set(METRICS), "config.compare.metrics",
                tuple(c.metrics), f"some of {METRICS}")
  for name in c.order:
    missing = {"label", "model", "schedule", "phases", "scenes"} - set(c.rows[name])
    if missing:
      raise UserError(f"config.compare.rows.{name} lacks {sorted(missing)}")


def run_config(config: ml_collections.ConfigDict, name: str, k: int
               ) -> ml_collections.ConfigDict:
  """The plain experiment config of row `name`, seed index `k`."""
  shared = config.to_dict()
  row = shared.pop("compare")["rows"][name]
  shared.update(model=row["model"], schedule=row["schedule"], phases=row["phases"],
                seed=config.seed + k)
  shared["data"]["scenes"] = tuple(row["scenes"])
  return ml_collections.ConfigDict(shared)


def train_or_reuse(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Results of `config` in `workdir`: read back when finished with its test predictions,
  else trained (or resumed)."""
  results = rundir.finished_results(workdir, config, needs=(rundir.PREDICTIONS,))
  if results is None:
    results = runs.run_one(config, workdir, save_predictions=True)   # for the paired tests
  # Wall-clock time lives in run.json, apart from the results, which are reproducible.
  return {**results, "train_seconds": rundir.read_json(workdir, rundir.RUN_INFO)["train_seconds"]}


def scene_predictions(workdir: str, scene: str) -> dict[str, np.ndarray]:
  """A run's saved test predictions ('ctr', 'cvr') and labels ('click', 'conversion') on the
  rows of `scene` ('all': every row), in the test day's order."""
  scenes = rundir.read_json(workdir, rundir.SCHEMA)["scenes"]
  if scene not in scenes + ["all"]:
    raise UserError(f"config.compare.scene={scene!r}: {workdir} was trained on {scenes}")
  saved = np.load(rundir.path(workdir, rundir.PREDICTIONS))
  rows = (np.ones_like(saved["scene"], bool) if scene == "all"
          else saved["scene"] == scenes.index(scene))
  return {k: saved[k][rows] for k in (*tasks.PREDICTED, "click", "conversion") if k in saved}


def scene_slices(workdir: str, scene: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{task: (labels, predictions)} on the rows of `scene` ('all': every row) in a run's
  saved predictions (only 'ctr' for CTR-only data)."""
  saved = scene_predictions(workdir, scene)
  columns = {k: saved[k] for k in ("click", "conversion") if k in saved}
  probs = {k: saved[k] for k in tasks.PREDICTED if k in saved}
  return {task: (labels, preds)
          for task, labels, preds, _ in metrics.task_slices(columns, probs)}


@contextlib.contextmanager
def compilation_cache_in(path: str):
  """JAX's persistent compilation cache in `path`, unless one is configured already.

  The seeds of a row compile the same programs; with the cache they compile once, which is
  most of a short run's time on a CPU. The cache is process-wide, so it is reset on entry
  (a cache left unused by earlier compiles stays off otherwise) and restored on exit.
  """
  if jax.config.jax_compilation_cache_dir:
    yield
    return
  saved = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  compilation_cache.reset_cache()
  try:
    yield
  finally:
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved)
    compilation_cache.reset_cache()


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains or reuses every (row, seed), then writes the table files; returns results."""
  check(config)
  c = config.compare
  rundir.write_config(workdir, config)
  start = time.time()
  results, slices = {}, {}
  with compilation_cache_in(rundir.path(workdir, rundir.COMPILATION_CACHE)):
    for name in c.order:
      results[name], slices[name] = [], []
      for k in range(c.seeds):
        run_dir = os.path.join(workdir, name, f"seed{k}")
        print(f"\n=== {name} ({c.rows[name].label}), seed {k}: {run_dir}")
        results[name].append(train_or_reuse(run_config(config, name, k), run_dir))
        slices[name].append(scene_slices(run_dir, c.scene))
  summary = summarize(c, results, slices)
  summary["wall_seconds"] = time.time() - start
  text = tables.write(c, summary, workdir)
  rundir.write_json(workdir, rundir.RESULTS, summary)
  print("\n" + text)
  return summary


def summarize(c: ml_collections.ConfigDict, results: dict[str, list[dict]],
              slices: dict[str, list[dict]]) -> dict[str, float]:
  """The flat results.json of a comparison (see the module docstring for the keys)."""
  out = {}
  for name, seeds in results.items():
    keys = set.intersection(*(set(r) for r in seeds))
    for key in sorted(k for k in keys if k.startswith(("test/", "oracle/"))):
      values = np.array([r[key] for r in seeds], np.float64)
      out[f"{name}/{key}_mean"] = float(values.mean())
      out[f"{name}/{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else float("nan")
    out[f"{name}/train_seconds_mean"] = float(np.mean([r["train_seconds"] for r in seeds]))
  for name in results:
    for task in c.tasks:
      for metric in c.metrics:
        key = f"test/{c.scene}/{task}/{metric}"
        values = [r[key] for r in results[name]]
        out.update({f"{name}/{key}_seed{k}": v for k, v in enumerate(values)})
        out[f"{name}/{key}_delta"] = (out[f"{name}/{key}_mean"]
                                      / out[f"{c.baseline}/{key}_mean"] - 1.0)
        if name != c.baseline and len(values) > 1:
          base = [r[key] for r in results[c.baseline]]
          out[f"{name}/{key}_p_seeds"] = float(stats.ttest_ind(values, base,
                                                               equal_var=False).pvalue)
      out.update(_paired_tests(c, name, task, slices[name], slices[c.baseline]))
  return out


def _paired_tests(c, name, task, runs, baseline_runs) -> dict[str, float]:
  """Paired tests of one row and task against the baseline (module docstring: which)."""
  labels = runs[0][task][0]
  for run, base in zip(runs, baseline_runs):
    if not np.array_equal(run[task][0], labels) or not np.array_equal(base[task][0], labels):
      raise ValueError(f"rows {name!r} and {c.baseline!r}: the {task} labels of "
                       f"{c.scene} differ, so the runs did not test on the same rows")
  averaged = np.mean([run[task][1] for run in runs], axis=0)
  base_averaged = np.mean([base[task][1] for base in baseline_runs], axis=0)
  out = {}
  for metric in set(c.metrics) & set(TESTS):
    key = f"{name}/test/{c.scene}/{task}/{metric}"
    test = TESTS[metric](labels, averaged, base_averaged)
    out[f"{key}_ensemble"] = test.a
    if name != c.baseline:
      per_seed = [TESTS[metric](labels, run[task][1], base[task][1]).p
                  for run, base in zip(runs, baseline_runs)]
      # A test without a verdict (NaN: e.g. no positives on a tiny test set) is left out;
      # with none left the range is NaN.
      defined = [p for p in per_seed if np.isfinite(p)] or [np.nan]
      out.update({f"{key}_p": test.p, f"{key}_p_seed_min": float(min(defined)),
                  f"{key}_p_seed_max": float(max(defined))})
  return out
