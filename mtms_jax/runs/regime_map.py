"""The regime map: one model against the best of the others, cell by cell of a grid of data.

Where does MTMS win? The paper makes its claims for conditions (scenes that differ, rich
conversions, many scenes, a hot start) that a data generator sets by knobs
(`mtms_jax/data/regimes.py`); the map runs one comparison per setting of the knobs and shows,
per task, the subject (MTMS) minus the best other model.

A map config is a comparison config (`runs/compare.py`: data, rows, seeds, ...) with a section
  regime_map.cells.<name>   row, column: the cell's place on the heatmaps (e.g. 'rich, 10
                            scenes', 'similarity 0.5'); kwargs: its data's kwargs, over
                            config.data.kwargs; optional rows.<row>.model: settings of that
                            row's model in this cell, over compare.rows.<row>.model (e.g.
                            the sources MTMS's ranking phase reads of 100 scenes)
  regime_map.order          the cells to run, in order
  regime_map.subject        the row each cell measures against the best of the others
  regime_map.metric         'auc' (higher is better) or 'mae' (lower)
  regime_map.item_field     the sparse field whose statistics place a cell (data/describe.py)
  regime_map.reference      optional ({} for none): label, data (a data config), item_field:
                            a data set described and placed beside the cells, e.g. MovieLens:
                            its statistics and the nearest cell by them

Each cell is a comparison in `workdir/<cell>/`, its baseline the subject, so that every
other row's p's there are against the subject: DeLong's test (AUC) or the paired t-test
(MAE) on seed-averaged predictions, and Welch's t-test over seeds, all symmetric. A rerun
trains only what is missing (`compare.run`). The best other row of a cell and task is the one
with the best mean over seeds on the test rows: the map reports; nothing is chosen from it.

Writes regime_map.md, regime_map.csv, regime_map_<task>.png (a heatmap per task: the subject
minus the best other, '**' where Welch's p over seeds < 0.05, '*' where only the paired
test's is) and results.json: '<cell>/<task>/<key>' for the keys of `cell_summary`, and
'<cell>/stat/<statistic>' for the cell data's statistics.
"""

from __future__ import annotations

import csv
import math
import os
import time

import ml_collections
import numpy as np

from mtms_jax import errors, rundir
from mtms_jax.data import describe, registry
from mtms_jax.report import markdown, plots
from mtms_jax.runs import compare
from mtms_jax.train import early_stopping

MD, CSV = "regime_map.md", "regime_map.csv"
# The statistics that place a cell and the reference data set (data/describe.py).
PLACING = ("item_ctr_correlation", "all_conversions_per_click")
SIGNIFICANT = 0.05


def check(config: ml_collections.ConfigDict) -> None:
  """UserError naming the `regime_map` field that is wrong; the comparison's own fields are
  `compare.check`'s."""
  m = config.regime_map
  errors.expect(len(m.order) > 0 and len(set(m.order)) == len(m.order)
                and set(m.order) <= set(m.cells), "config.regime_map.order", tuple(m.order),
                f"distinct names of cells {sorted(m.cells)}")
  errors.expect_choice("config.regime_map.subject", m.subject, tuple(config.compare.order))
  errors.expect(len(config.compare.order) > 1, "config.compare.order",
                tuple(config.compare.order), "the subject and at least one other row")
  # A metric with a paired test (compare.TESTS): the map reports its p against the best.
  errors.expect_choice("config.regime_map.metric", m.metric, tuple(compare.TESTS))
  for name in m.order:
    missing = {"row", "column", "kwargs"} - set(m.cells[name])
    if missing:
      raise errors.UserError(f"config.regime_map.cells.{name} lacks {sorted(missing)}")
    rows = tuple(m.cells[name].get("rows", {}))
    errors.expect(set(rows) <= set(config.compare.order), f"config.regime_map.cells.{name}.rows",
                  rows, f"rows of config.compare.order {list(config.compare.order)}")


def cell_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """The comparison config of cell `name`: its data kwargs over the map's, its rows' model
  settings over theirs, the subject as baseline, no `regime_map` section (the cell's runs
  are ordinary comparison runs)."""
  cell = config.to_dict()
  section = cell.pop("regime_map")
  cell["data"]["kwargs"].update(section["cells"][name]["kwargs"])
  for row, settings in section["cells"][name].get("rows", {}).items():
    cell["compare"]["rows"][row]["model"].update(settings["model"])
  cell["compare"]["baseline"] = section["subject"]
  return ml_collections.ConfigDict(cell)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs (or reuses) every cell's comparison, then writes the map's files."""
  check(config)                # each cell's comparison is checked by compare.run
  m = config.regime_map
  rundir.write_config(workdir, config)
  start = time.time()
  out = {}
  # One compilation cache for every cell: cells of the same shapes compile once.
  with compare.compilation_cache_in(rundir.path(workdir, rundir.COMPILATION_CACHE)):
    for name in m.order:
      print(f"\n##### regime map cell {name}: {dict(m.cells[name].kwargs)}")
      cell = cell_config(config, name)
      cell_start = time.time()
      summary = compare.run(cell, os.path.join(workdir, name))
      for task in config.compare.tasks:
        for key, value in cell_summary(cell.compare, summary, task, m.metric).items():
          out[f"{name}/{task}/{key}"] = value
      out[f"{name}/wall_seconds"] = time.time() - cell_start
      out.update({f"{name}/stat/{k}": v for k, v in statistics(cell.data, m.item_field).items()})
  if m.get("reference"):
    reference = m.reference
    out.update({f"reference/stat/{k}": v
                for k, v in statistics(reference.data, reference.item_field).items()})
  out["wall_seconds"] = time.time() - start
  text = write(config, out, workdir)
  rundir.write_json(workdir, rundir.RESULTS, out)
  print("\n" + text)
  return out


def cell_summary(c: ml_collections.ConfigDict, summary: dict, task: str, metric: str
                 ) -> dict:
  """The subject (`c.baseline`) against the best other row on `task`: means, difference
  (subject minus best, in the metric's units: > 0 is better for AUC, < 0 for MAE), the
  paired test's p and Welch's p over seeds, and mean train seconds of both."""
  key = f"test/{c.scene}/{task}/{metric}"
  others = [n for n in c.order if n != c.baseline]
  sign = _sign(metric)
  best = max(others, key=lambda n: sign * summary[f"{n}/{key}_mean"])
  return {
      "subject_mean": summary[f"{c.baseline}/{key}_mean"],
      "subject_std": summary[f"{c.baseline}/{key}_std"],
      "best_other": best,
      "best_other_mean": summary[f"{best}/{key}_mean"],
      "best_other_std": summary[f"{best}/{key}_std"],
      "difference": summary[f"{c.baseline}/{key}_mean"] - summary[f"{best}/{key}_mean"],
      "p": summary.get(f"{best}/{key}_p", math.nan),
      "p_seeds": summary.get(f"{best}/{key}_p_seeds", math.nan),
      "subject_train_seconds": summary[f"{c.baseline}/train_seconds_mean"],
      "best_other_train_seconds": summary[f"{best}/train_seconds_mean"],
  }


def _sign(metric: str) -> float:
  """1 where a higher `metric` is better (AUC), -1 where lower is (MAE)."""
  return 1.0 if early_stopping.metric_mode(metric, "auto") == "max" else -1.0


def statistics(data_config: ml_collections.ConfigDict, item_field: str) -> dict[str, float]:
  """The data's place (PLACING and the rest of data/describe.py's scalars) on all its rows."""
  stats = describe.describe(registry.load_data(data_config), item_field)
  return {k: float(v) for k, v in stats.items() if not isinstance(v, list)}


def nearest_cell(out: dict, order) -> str:
  """The cell whose PLACING statistics are nearest the reference's, each statistic in units
  of its spread over the cells (its range; 1 if the cells do not vary in it)."""
  def point(prefix):
    return np.array([out[f"{prefix}/stat/{k}"] for k in PLACING])
  cells = np.stack([point(name) for name in order])
  spread = np.nanmax(cells, axis=0) - np.nanmin(cells, axis=0)
  spread = np.where(spread > 0, spread, 1.0)
  distance = np.nansum(((cells - point("reference")) / spread) ** 2, axis=1)
  return list(order)[int(np.argmin(distance))]


def marker(p: float, p_seeds: float) -> str:
  """'**': Welch's p over seeds < 0.05 (retraining keeps the order); '*': only the paired
  test's p (the seed-averaged models rank the test rows differently); '': neither."""
  if p_seeds < SIGNIFICANT:
    return "**"
  return "*" if p < SIGNIFICANT else ""


def write(config: ml_collections.ConfigDict, out: dict, workdir: str) -> str:
  """regime_map.md, .csv and a heatmap PNG per task; returns the markdown."""
  text = map_md(config, out)
  rundir.write_text(workdir, MD, text + "\n")
  write_csv(config, out, rundir.path(workdir, CSV))
  for task in config.compare.tasks:
    heatmap(config, out, task, rundir.path(workdir, f"regime_map_{task}.png"))
  return text


def _of(out: dict, cell: str, task: str) -> dict:
  """`cell_summary`'s entries of (cell, task) from the map's flat results."""
  prefix = f"{cell}/{task}/"
  return {k[len(prefix):]: v for k, v in out.items() if k.startswith(prefix)}


def _difference(s: dict) -> str:
  return f"{s['difference']:+.4f}{marker(s['p'], s['p_seeds'])}"


def _p(p: float) -> str:
  return "nan" if math.isnan(p) else f"{p:.2g}" if p >= 1e-3 else f"{p:.0e}"


def map_md(config: ml_collections.ConfigDict, out: dict) -> str:
  m, c = config.regime_map, config.compare
  subject = c.rows[m.subject].label
  header = ["cell", "row", "column"] + [f"{t.upper()} {h}" for t in c.tasks for h in
                                        (f"{subject} - best", "best other", "p", "seeds p")]
  header += [f"{subject} train s", "best other train s", "cell s"]
  header += [f"data {k}" for k in PLACING]
  body = []
  for name in m.order:
    cell = m.cells[name]
    row = [name, cell.row, cell.column]
    for t in c.tasks:
      s = _of(out, name, t)
      row += [_difference(s), f"{c.rows[s['best_other']].label} {s['best_other_mean']:.4f}",
              _p(s["p"]), _p(s["p_seeds"])]
    first = c.tasks[0]
    row += [f"{out[f'{name}/{first}/subject_train_seconds']:.0f}",
            f"{out[f'{name}/{first}/best_other_train_seconds']:.0f}",
            f"{out[f'{name}/wall_seconds']:.0f}"]
    row += [f"{out[f'{name}/stat/{k}']:.3f}" for k in PLACING]
    body.append(row)
  lines = [f"**{c.title}**: {subject} minus the best other model, test {m.metric.upper()}, "
           f"all scenes, mean over {c.seeds} seeds", "", markdown.table(header, body), "",
           f"best other: the other model with the best mean {m.metric.upper()} on the cell's "
           "test rows; p: DeLong's test (AUC) or the paired t-test (MAE) of the seed-averaged "
           "predictions; seeds p: Welch's t-test of the per-seed values. '**': seeds p < 0.05; "
           "'*': only p < 0.05. train s: mean training seconds of a run (compile included); "
           "cell s: the cell's wall time, every model and seed. data: the cell's statistics "
           "(mtms_jax/data/describe.py) on all its rows."]
  if m.get("reference"):
    stats = ", ".join(f"{k} {out[f'reference/stat/{k}']:.3f}" for k in PLACING)
    lines += ["", f"Reference data, {m.reference.label}: {stats}; nearest cell by these: "
              f"{nearest_cell(out, m.order)}."]
  lines.append(f"\nWall time of the map: {out['wall_seconds'] / 60:.1f} min.")
  return "\n".join(lines)


def write_csv(config: ml_collections.ConfigDict, out: dict, path: str) -> None:
  """Long format: a line per (cell, task) with every number behind the map."""
  m, c = config.regime_map, config.compare
  keys = tuple(_of(out, m.order[0], c.tasks[0]))      # cell_summary's, in its order
  with rundir.replacing(path) as f:
    writer = csv.writer(f)
    writer.writerow(["cell", "row", "column", "task", *keys, "cell_seconds",
                     *(f"data_{k}" for k in PLACING)])
    for name in m.order:
      for t in c.tasks:
        s = _of(out, name, t)
        writer.writerow([name, m.cells[name].row, m.cells[name].column, t,
                         *(s[k] for k in keys), out[f"{name}/wall_seconds"],
                         *(out[f"{name}/stat/{k}"] for k in PLACING)])


def _axes(m) -> tuple[list[str], list[str]]:
  """The heatmap's row and column labels, in the cells' order of first appearance."""
  rows, columns = [], []
  for name in m.order:
    for labels, label in ((rows, m.cells[name].row), (columns, m.cells[name].column)):
      if label not in labels:
        labels.append(label)
  return rows, columns


def heatmap(config: ml_collections.ConfigDict, out: dict, task: str, path: str) -> None:
  """The subject minus the best other model per cell (blue: the subject better), the
  difference and its marker written in each cell, the best other model's name below."""
  plt = plots.pyplot()
  m, c = config.regime_map, config.compare
  rows, columns = _axes(m)
  grid = np.full((len(rows), len(columns)), np.nan)
  sign = _sign(m.metric)
  fig, ax = plt.subplots(figsize=(2.2 * len(columns) + 2.5, 0.9 * len(rows) + 1.6))
  for name in m.order:
    i, j = rows.index(m.cells[name].row), columns.index(m.cells[name].column)
    s = _of(out, name, task)
    grid[i, j] = sign * s["difference"]
    ax.text(j, i, f"{_difference(s)}\nvs {c.rows[s['best_other']].label}", ha="center",
            va="center", fontsize=8)
  limit = np.nanmax(np.abs(grid)) or 1e-3
  image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
  ax.set_xticks(range(len(columns)), columns)
  ax.set_yticks(range(len(rows)), rows)
  fig.colorbar(image, ax=ax, label=f"{c.rows[m.subject].label} better ->")
  ax.set_title(f"{task.upper()} {m.metric.upper()}: {c.rows[m.subject].label} minus the best "
               f"other ({c.seeds} seeds; ** seeds p<0.05, * paired p<0.05)", fontsize=9)
  fig.tight_layout()
  with rundir.replacing(path, "wb") as f:
    fig.savefig(f, format="png", dpi=120)
  plt.close(fig)
