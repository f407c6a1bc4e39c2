"""A comparison's table in the paper's layout (markdown), as CSV, and as a PNG plot.

Reads only the flat summary of `compare.summarize`, so a table can be redrawn from a
comparison's results.json. Cells: mean ± std over seeds; beside each row that is not the
baseline, the relative change of the mean, the paired test's p (seed-averaged
predictions) with the range of the per-seed p's in brackets, and Welch's t-test over seeds.
"""

from __future__ import annotations

import csv
import math

from mtms_jax import rundir
from mtms_jax.report import markdown, plots

NAMES = {"auc": "AUC", "mae": "MAE", "logloss": "logloss", "calibration": "calibration"}


def write(c, summary: dict, workdir: str) -> str:
  """Writes table.md, table.csv and table.png to `workdir`; returns the markdown."""
  text = table_md(c, summary)
  rundir.write_text(workdir, rundir.TABLE_MD, text + "\n")
  write_csv(c, summary, rundir.path(workdir, rundir.TABLE_CSV))
  plot(c, summary, rundir.path(workdir, rundir.TABLE_PNG))
  return text


def measures(c) -> list[tuple[str, str]]:
  return [(task, metric) for task in c.tasks for metric in c.metrics]


def _key(c, name, task, metric):
  return f"{name}/test/{c.scene}/{task}/{metric}"


def value_cell(c, summary, name, task, metric) -> str:
  key = _key(c, name, task, metric)
  return f"{summary[key + '_mean']:.4f} ± {summary[key + '_std']:.4f}"


def change_cell(c, summary, name, task, metric) -> str:
  """'+0.33%, p=0.012 [0.003, 0.21], seeds p=0.3'; empty for the baseline."""
  if name == c.baseline:
    return ""
  key = _key(c, name, task, metric)
  cell = f"{100 * summary[key + '_delta']:+.2f}%"
  if key + "_p" in summary:
    cell += (f", p={_p(summary[key + '_p'])} [{_p(summary[key + '_p_seed_min'])}, "
             f"{_p(summary[key + '_p_seed_max'])}]")
  if key + "_p_seeds" in summary:
    cell += f", seeds p={_p(summary[key + '_p_seeds'])}"
  return cell


def _p(p: float) -> str:
  return "nan" if math.isnan(p) else f"{p:.2g}" if p >= 1e-3 else f"{p:.0e}"


def table_md(c, summary: dict) -> str:
  """Table I layout ('rows': a model per row) or Table II layout ('columns')."""
  names = list(c.order)
  title = f"**{c.title}** ({c.scene}; mean ± std over {c.seeds} seeds)"
  if c.layout == "rows":
    header = ["Model"] + [f"{t.upper()} {NAMES[m]}{h}" for t, m in measures(c)
                          for h in ("", " change")]
    body = [[_label(c, n)] + [cell for t, m in measures(c)
                              for cell in (value_cell(c, summary, n, t, m),
                                           change_cell(c, summary, n, t, m))]
            for n in names]
  else:
    header = ["Measure"] + [h for n in names for h in
                            ([_label(c, n)] if n == c.baseline else [_label(c, n), "change"])]
    body = [[f"{t.upper()} {NAMES[m]}"] + [
        cell for n in names for cell in
        ([value_cell(c, summary, n, t, m)] if n == c.baseline else
         [value_cell(c, summary, n, t, m), change_cell(c, summary, n, t, m)])]
            for t, m in measures(c)]
  lines = [title, "", markdown.table(header, body)]
  lines += ["", "change: relative change of the mean against the baseline; p: paired test "
            "(AUC: DeLong; MAE: t-test on per-row errors) of the seed-averaged predictions on "
            "the same test rows, with the range of the per-seed p's in brackets; seeds p: "
            "Welch's t-test of the per-seed values (training noise)."]
  oracle = [f"{t.upper()} {summary[k]:.4f}" for t in c.tasks
            if (k := f"{c.baseline}/oracle/{c.scene}/{t}/auc_mean") in summary]
  if oracle:
    lines.append(f"Oracle AUC (true probabilities) on {c.scene}: {', '.join(oracle)}.")
  return "\n".join(lines)


def _label(c, name) -> str:
  return c.rows[name].label + (" (baseline)" if name == c.baseline else "")


def write_csv(c, summary: dict, path: str) -> None:
  """Long format: one line per (row, task, metric) with every number behind the table."""
  fields = ["row", "label", "scene", "task", "metric", "mean", "std", "seeds", "delta",
            "p", "p_seed_min", "p_seed_max", "p_seeds", "ensemble"]
  with rundir.replacing(path) as f:
    writer = csv.writer(f)
    writer.writerow(fields)
    for name in c.order:
      for task, metric in measures(c):
        key = _key(c, name, task, metric)
        seeds = ";".join(f"{summary[f'{key}_seed{k}']:.6g}" for k in range(c.seeds))
        writer.writerow([name, c.rows[name].label, c.scene, task, metric]
                        + [summary.get(f"{key}_{x}", "") for x in ("mean", "std")] + [seeds]
                        + [summary.get(f"{key}_{x}", "") for x in
                           ("delta", "p", "p_seed_min", "p_seed_max", "p_seeds",
                            "ensemble")])


def plot(c, summary: dict, path: str) -> None:
  """A panel per task (rows) and metric (columns): each seed a dot, mean ± std a bar, the
  baseline's mean dashed."""
  plt = plots.pyplot()
  names = list(c.order)
  fig, axes = plt.subplots(len(c.tasks), len(c.metrics), squeeze=False,
                           figsize=(1.5 + 0.7 * len(names) * len(c.metrics),
                                    0.5 + 3.5 * len(c.tasks)))
  for ax, (task, metric) in zip(axes.flat, measures(c)):
    for i, name in enumerate(names):
      key = _key(c, name, task, metric)
      seeds = [summary[f"{key}_seed{k}"] for k in range(c.seeds)]
      ax.scatter([i] * len(seeds), seeds, s=12, color="0.6", zorder=2)
      ax.errorbar(i, summary[key + "_mean"], yerr=summary[key + "_std"], fmt="o",
                  color="C0" if name != c.baseline else "C3", capsize=4, zorder=3)
    ax.axhline(summary[_key(c, c.baseline, task, metric) + "_mean"], color="C3", ls="--",
               lw=0.8)
    ax.set_xticks(range(len(names)), [c.rows[n].label for n in names], rotation=35,
                  ha="right", fontsize=8)
    ax.set_title(f"{task.upper()} {NAMES[metric]} ({c.scene})")
  fig.suptitle(c.title)
  fig.tight_layout()
  with rundir.replacing(path, "wb") as f:
    fig.savefig(f, format="png", dpi=120)
  plt.close(fig)
