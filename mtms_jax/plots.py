"""PNG figures of a day-by-day run and of a sweep (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")   # files only: runs on machines without a display
import matplotlib.pyplot as plt  # noqa: E402

TASKS = ("ctr", "cvr", "ctcvr")


def metric_over_days(results: Mapping[str, float], days: Sequence[int], scenes: Sequence[str],
                     path: str, metric: str = "auc"):
  """One panel per task: `metric` on each test day, a line per scene (dashed: the oracle)."""
  fig, axes = plt.subplots(1, len(TASKS), figsize=(4.5 * len(TASKS), 3.6), squeeze=False)
  for ax, task in zip(axes[0], TASKS):
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
  fig.savefig(path, dpi=120)
  plt.close(fig)


def sweep_bars(names: Sequence[str], values: Sequence[float], metric: str, path: str):
  """Horizontal bars of `metric` per sweep point, in the given order (best first)."""
  fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
  ax.barh(range(len(names)), values, color="tab:blue")
  ax.set_yticks(range(len(names)), names, fontsize="small")
  ax.invert_yaxis()
  finite = [v for v in values if v == v]
  if finite:
    span = max(finite) - min(finite)
    ax.set_xlim(min(finite) - (span or abs(min(finite)) * 0.01 or 1) * 0.5,
                max(finite) + (span or abs(max(finite)) * 0.01 or 1) * 0.2)
  for i, v in enumerate(values):
    ax.text(v, i, f" {v:.4f}", va="center", fontsize="small")
  ax.set_xlabel(metric)
  ax.grid(axis="x", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
