r"""Hyperparameter sweeps: an optional `get_hyper(h)` next to an experiment's `get_config()`.

  make sweep NAME=sweep_demo              # run every point, then write the sweep table
  make sweep NAME=sweep_demo ARG=smoke    # the same on the seconds-long shrink
  python -m mtms_jax.runs.sweep --config experiments/sweep_demo.py \
      --workdir checkpoints/sweep_demo/sweep

`get_hyper(h)` receives this module and returns a list of points, each a dict
{config key: value}, built with `h.sweep`, `h.fixed`, `h.product` and `h.zipit`:

  def get_hyper(h):
    return h.product([h.sweep("config.model.aggregation", ["concat", "mean"]),
                      h.zipit([h.sweep("config.seed", [0, 1]),
                               h.sweep("config.data.kwargs.seed", [0, 1])])])

Every key must already be in the config (a typo is an error naming the key). Each point
trains in `<workdir>/<point>/`, named by its values, e.g. 'aggregation=mean,seed=1,
kwargs.seed=1', as a run of its kind (`runs.run_one`). Rerunning the sweep skips the
finished points (`rundir.finished_results`; a point's folder left by another config is an
error) and resumes the others from their checkpoints. The table, sorted by
`config.sweep.metric`, is written to sweep.csv, sweep.md and sweep.png in `<workdir>`. The
sweep is a run kind of `mtms_jax.runs`, chosen by its command rather than a config section.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import itertools
import math
import os
import re
import shlex
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from mtms_jax import cli, config_checks, errors, orbax_errors, rundir, runs, tasks
from mtms_jax.data import logs
from mtms_jax.errors import UserError
from mtms_jax.report import markdown, plots
from mtms_jax.train import loop

Point = dict[str, Any]
AUCS = tuple(f"test/all/{t}/auc" for t in tasks.ALL)   # shown in sweep.md


# ----------------------------------------------------------------------------------------
# Declaring points (the `h` of get_hyper)
# ----------------------------------------------------------------------------------------
def sweep(key: str, values: Sequence[Any]) -> list[Point]:
  """One point per value of `key`."""
  return [{key: v} for v in values]


def fixed(key: str, value: Any) -> list[Point]:
  """A single point: `key` set to `value` (combine with product to fix it everywhere)."""
  return [{key: value}]


def product(factors: Sequence[list[Point]]) -> list[Point]:
  """Every combination of one point per factor; the first factor varies slowest."""
  return [merge(combination) for combination in itertools.product(*factors)]


def zipit(factors: Sequence[list[Point]]) -> list[Point]:
  """The i-th points of all factors merged, for each i; factors must have equal lengths."""
  lengths = [len(f) for f in factors]
  if len(set(lengths)) > 1:
    raise UserError(f"zipit needs factors of equal length, got lengths {lengths}")
  return [merge(combination) for combination in zip(*factors)]


def merge(points: Sequence[Point]) -> Point:
  merged = {}
  for point in points:
    repeated = sorted(set(point) & set(merged))
    if repeated:
      raise UserError(f"sweep keys {repeated} are set twice in one point")
    merged.update(point)
  return merged


def hyper_points(module) -> list[Point]:
  """The points of an experiment module's `get_hyper`, declared with this module's functions."""
  if not hasattr(module, "get_hyper"):
    raise UserError(f"{module.__file__} has no get_hyper(h); add one to sweep it "
                    "(see mtms_jax/runs/sweep.py)")
  return module.get_hyper(sys.modules[__name__])


# ----------------------------------------------------------------------------------------
# Points -> configs and folder names
# ----------------------------------------------------------------------------------------
def key_path(key: str) -> list[str]:
  """'config.model.aggregation' (or 'model.aggregation') -> ['model', 'aggregation']."""
  return key.removeprefix("config.").split(".")


def check_keys(config: ml_collections.ConfigDict, points: Sequence[Point], source: str):
  """Raises KeyError naming the first swept key that is not already in `config`."""
  for key in sorted({k for p in points for k in p}):
    node, walked = config, "config"
    for part in key_path(key):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise KeyError(f"{source}: get_hyper sweeps {key!r}, but {walked} has no key "
                       f"{part!r}; its keys are {known}")
      node, walked = node[part], f"{walked}.{part}"


def apply(config: ml_collections.ConfigDict, point: Point, source: str
          ) -> ml_collections.ConfigDict:
  """A copy of `config` with the point's values set (types checked by ml_collections)."""
  config = copy.deepcopy(config)
  for key, value in point.items():
    *parents, last = key_path(key)
    node = config
    for part in parents:
      node = node[part]
    try:
      node[last] = value
    except TypeError as e:
      raise TypeError(f"{source}: get_hyper sets {key!r} to {value!r}: {e}") from e
  return config


def short_names(keys: Sequence[str]) -> dict[str, str]:
  """The shortest dotted suffix of each key that is not a suffix of another key."""
  paths = {k: key_path(k) for k in keys}
  names = {}
  for key, path in paths.items():
    for n in range(1, len(path) + 1):
      suffix = path[-n:]
      if not any(other[-n:] == suffix for k, other in paths.items() if k != key):
        break
    names[key] = ".".join(suffix)
  return names


def format_value(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (tuple, list)):
    return "-".join(format_value(v) for v in value)
  return str(value)


def point_names(points: Sequence[Point]) -> list[str]:
  """Readable, file-safe folder names: 'aggregation=mean,seed=1'."""
  names = short_names(list(dict.fromkeys(k for p in points for k in p)))
  folders = [re.sub(r"[^A-Za-z0-9._=,+-]", "_",
                    ",".join(f"{names[k]}={format_value(v)}" for k, v in p.items()))
             for p in points]
  seen = {}
  for folder, point in zip(folders, points):
    if folder in seen:
      raise UserError(f"sweep points {seen[folder]} and {point} share the folder name "
                      f"{folder!r}; make their values differ in more than punctuation")
    seen[folder] = point
  return folders


# ----------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------
def run_sweep(config: ml_collections.ConfigDict, points: Sequence[Point], workdir: str,
              source: str) -> list[dict]:
  """Trains every point not finished yet, then writes and returns the sweep table's rows.

  Finished points (`rundir.finished_results`) are read back; a point's folder that holds a
  run of another config is an error before any point trains. A point that fails (e.g. a
  loss turning NaN; a UserError, as one line: values the point's data cannot take) is
  reported in the table and the sweep goes on; a full disk, and
  SIGTERM or SIGINT after the point saved a checkpoint, stop the whole sweep.
  """
  if not points:
    raise UserError(f"{source}: get_hyper returned no points")
  check_keys(config, points, source)
  configs = [apply(config, point, source) for point in points]
  for point_config in configs:      # every point's values, before any point trains
    config_checks.check(point_config)
  folders = point_names(points)
  columns = short_names(list(dict.fromkeys(k for p in points for k in p)))
  finished = [rundir.finished_results(os.path.join(workdir, folder), point_config)
              for folder, point_config in zip(folders, configs)]
  rows = []
  for i, (folder, point) in enumerate(zip(folders, points)):
    print(f"[{i + 1}/{len(points)}] {folder}"
          + (": finished earlier, skipped" if finished[i] is not None else ""))
    row = {"point": folder, **{columns[k]: format_value(v) for k, v in point.items()}}
    rows.append(point_row(row, finished[i], configs[i], os.path.join(workdir, folder)))
  write_table(rows, list(dict.fromkeys(columns.values())), config.sweep.metric,
              config.sweep.mode, workdir)
  return rows


def point_row(row: dict, results: dict | None, config: ml_collections.ConfigDict,
              point_dir: str) -> dict:
  """`row` of a point finished with `results`, or trained now (None); a failure, its error
  as the row's status."""
  try:
    if results is None:
      results = runs.run_one(config, point_dir)
    return finished_row(row, results, point_dir)
  except loop.Interrupted:
    raise
  except Exception as e:
    if cli.disk_full_message(e) is not None:
      raise           # the next points would meet it too: the sweep stops, with one line
    if isinstance(e, UserError):    # the point's data cannot take its values: one line
      print(f"error: {row['point']}: {e}", file=sys.stderr)
    else:
      traceback.print_exc()
    return {**row, "status": f"failed: {type(e).__name__}: {e}"}


def finished_row(row: dict, results: dict, point_dir: str) -> dict:
  """`row` plus the test metrics, steps and training seconds (run.json) of a finished point."""
  seconds = rundir.read_json(point_dir, rundir.RUN_INFO)["train_seconds"]
  return {**row, **{k: v for k, v in results.items() if k.startswith("test/")},
          "train_steps": results["train_steps"], "train_seconds": round(seconds, 1),
          "status": "ok"}


def sort_rows(rows: list[dict], metric: str, mode: str) -> list[dict]:
  """Best first by `metric` ('max' or 'min'); rows without a finite value last."""
  sign = -1 if mode == "max" else 1

  def key(row):
    value = row.get(metric, float("nan"))
    return (0, sign * value) if math.isfinite(value) else (1, 0.0)
  return sorted(rows, key=key)


def write_table(rows: list[dict], key_columns: list[str], metric: str, mode: str,
                workdir: str):
  """sweep.csv (every test metric), sweep.md and sweep.png (the main ones), best first."""
  finished = [r for r in rows if r["status"] == "ok"]
  if finished and not any(metric in r for r in finished):
    raise UserError(f"config.sweep.metric={metric!r} is not in the points' results.json; "
                     "expected a key like 'test/all/ctcvr/auc'")
  rows = sort_rows(rows, metric, mode)
  tail = ["train_steps", "train_seconds", "status"]
  shown = ["point", *key_columns, *dict.fromkeys([metric, *AUCS]), *tail]
  every = ["point", *key_columns, *sorted({k for r in finished for k in r
                                           if k.startswith("test/")}), *tail]
  with rundir.replacing(rundir.path(workdir, rundir.SWEEP_CSV)) as f:
    writer = csv.DictWriter(f, fieldnames=every, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
  rundir.write_text(workdir, rundir.SWEEP_MD, sweep_md(rows, shown, metric, mode))
  ranked = [r for r in rows if math.isfinite(r.get(metric, float("nan")))]
  if ranked:
    plots.sweep_bars([r["point"] for r in ranked], [r[metric] for r in ranked], metric,
                     rundir.path(workdir, rundir.SWEEP_PNG))


def sweep_md(rows: list[dict], columns: list[str], metric: str, mode: str) -> str:
  def cell(column, value):
    return f"{value:.4f}" if column.startswith("test/") else str(value)
  cells = [[cell(c, row[c]) if c in row else "" for c in columns] for row in rows]
  return (f"Sorted by {metric}, {'highest' if mode == 'max' else 'lowest'} first.\n\n"
          + markdown.table(columns, cells) + "\n")


# ----------------------------------------------------------------------------------------
# Command line (flags are defined only when run as a program, so importing this module
# next to mtms_jax.main defines no flag twice)
# ----------------------------------------------------------------------------------------
def load_module(path: str):
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0],
                                                path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)   # orbax logs every save at INFO
    orbax_errors.drop_logged_errors()
  errors.one_line_notices()
  # 'experiments/NAME.py:ARG' -> the file; its get_config(ARG) already gave FLAGS.config.
  path = config_flags.get_config_filename(flags.FLAGS["config"]).split(":", 1)[0]
  workdir = flags.FLAGS.workdir
  try:
    with cli.one_line_errors():
      # Before any point: the base config's values, and its schema file's logs (prepared
      # once); run_sweep checks every point's values before training any.
      config_checks.check(flags.FLAGS.config)
      logs.configure(flags.FLAGS.config)
      rows = runs.run_sweep(flags.FLAGS.config, hyper_points(load_module(path)), workdir, path)
  except loop.Interrupted as e:
    command = shlex.join([sys.executable, "-m", "mtms_jax.runs.sweep"] + sys.argv[1:])
    print(f"\n{e}\nResume the sweep with:\n  {command}", file=sys.stderr)
    sys.exit(128 + e.signum)
  table = rundir.path(workdir, rundir.SWEEP_MD)
  with open(table) as f:
    print(f"\nSweep table ({table}):\n{f.read()}")
  failed = [r["point"] for r in rows if r["status"] != "ok"]
  if failed:
    sys.exit(f"{len(failed)} point(s) failed: {failed}")


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Experiment config file with get_hyper.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Sweep folder: a subfolder per point, and the table.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=cli.parse_flags)
