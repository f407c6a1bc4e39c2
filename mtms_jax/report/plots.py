"""PNG figures of a day-by-day run and of a sweep (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mtms_jax import rundir, tasks


def pyplot():
  """matplotlib.pyplot with the file-only backend, imported on first use: matplotlib is
  half a second of every command's start, and only the runs that draw need it."""
  import matplotlib
  matplotlib.use("Agg")   # files only: runs on machines without a display
  import matplotlib.pyplot as plt
  return plt


def metric_over_days(results: Mapping[str, float], days: Sequence[int], scenes: Sequence[str],
                     path: str, metric: str = "auc"):
  """One panel per task: `metric` on each test day, a line per scene (dashed: the oracle)."""
  plt = pyplot()
  fig, axes = plt.subplots(1, len(tasks.ALL), figsize=(4.5 * len(tasks.ALL), 3.6),
                           squeeze=False)
  for ax, task in zip(axes[0], tasks.ALL):
    for scene in scenes:
      values = [results.get(f"day{d}/test/{scene}/{task}/{metric}", float("nan")) for d in days]
      line, = ax.plot(days, values, marker="o", label=scene)
      oracle = [results.get(f"day{d}/oracle/{scene}/{task}/{metric}") for d in days]
      if all(v is not None for v in oracle):
        ax.plot(days, oracle, linestyle="--", color=line.get_color(), alpha=0.6)
    ax.set_title(f"test {task} {metric}")
    ax.set_xlabel("test day")
    ax.set_xticks(list(days))
    ax.grid(alpha=0.3)
  axes[0][0].legend(title="scene (dashed: oracle)", fontsize="small")
  fig.tight_layout()
  with rundir.replacing(path, "wb") as f:
    fig.savefig(f, format="png", dpi=120)
  plt.close(fig)


def sweep_bars(names: Sequence[str], values: Sequence[float], metric: str, path: str):
  """Horizontal bars of `metric` per sweep point, in the given order (best first).

  The axis starts near the lowest value, not at 0: sweep points differ by little.
  """
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
  ax.barh(range(len(names)), values, color="tab:blue")
  ax.set_yticks(range(len(names)), names, fontsize="small")
  ax.invert_yaxis()
  low, high = min(values), max(values)
  pad = (high - low) * 0.5 or abs(high) * 0.01 or 0.01
  ax.set_xlim(low - pad, high + pad * 0.5)
  for i, v in enumerate(values):
    ax.text(v, i, f" {v:.4f}", va="center", fontsize="small")
  ax.set_xlabel(metric)
  ax.grid(axis="x", alpha=0.3)
  fig.tight_layout()
  with rundir.replacing(path, "wb") as f:
    fig.savefig(f, format="png", dpi=120)
  plt.close(fig)
