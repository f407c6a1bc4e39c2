"""Offline metrics per scene and task: AUC (exact), MAE (paper Eq. 3), logloss, calibration.

Slices: CTR and CTCVR over all impressions, CVR over clicked impressions only. Keys of the
flat report are '<split>/<scene>/<task>/<metric>', e.g. 'test/scene0/cvr/auc'; the scene
'all' pools every scene.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mtms_jax import tasks as tasks_lib

EPS = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Exact ROC AUC with ties counted as one half (Mann-Whitney U); NaN without both classes."""
  scores = np.asarray(scores, np.float64)
  return float(grouped_auc(labels, scores, np.zeros(scores.shape, np.intp), 1)[0])


def grouped_auc(labels: np.ndarray, scores: np.ndarray, group: np.ndarray,
                num_groups: int) -> np.ndarray:
  """(num_groups,) exact AUC of each group's rows (`group` == g), NaN for a group without
  both classes: the Mann-Whitney U of mid-ranks within the group, for every group from one
  sort by (group, score), not one sort a group (100 scenes: 100 sorts each evaluation)."""
  labels = np.asarray(labels) > 0.5
  group = np.asarray(group, np.intp)
  order = np.argsort(scores)
  if num_groups > 1:     # then by group, stably: numpy radix-sorts 16-bit ints (2x lexsort)
    small = np.int16 if num_groups <= np.iinfo(np.int16).max else np.intp
    order = order[np.argsort(group[order].astype(small), kind="stable")]
  g, v, positive = group[order], scores[order], labels[order]
  n = len(v)
  run_starts = np.ones(n, bool)                  # a run: rows of equal (group, score)
  run_starts[1:] = (g[1:] != g[:-1]) | (v[1:] != v[:-1])
  first = np.flatnonzero(run_starts)
  last = np.append(first[1:], n) - 1
  run = np.cumsum(run_starts) - 1
  group_first = np.searchsorted(g, np.arange(num_groups))
  ranks = (first[run] + last[run]) / 2 - group_first[g] + 1   # 1-based mid-ranks in the group
  n_pos = np.bincount(g, weights=positive, minlength=num_groups)
  n_neg = np.bincount(g, minlength=num_groups) - n_pos
  rank_sum = np.bincount(g, weights=ranks * positive, minlength=num_groups)
  with np.errstate(divide="ignore", invalid="ignore"):
    result = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
  return np.where((n_pos > 0) & (n_neg > 0), result, np.nan)


def task_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
  labels = np.asarray(labels)
  return grouped_task_metrics(labels, probs, np.zeros(labels.shape, np.intp), 1)[0]


def grouped_task_metrics(labels: np.ndarray, probs: np.ndarray, group: np.ndarray,
                         num_groups: int) -> list[dict[str, float]]:
  """The metrics of each group's rows (`group` == g), every group at once; a group without
  rows has its count (0) alone."""
  labels = np.asarray(labels, np.float64)
  probs = np.clip(np.asarray(probs, np.float64), EPS, 1 - EPS)
  group = np.asarray(group, np.intp)
  count = np.bincount(group, minlength=num_groups)

  def mean(values):
    with np.errstate(divide="ignore", invalid="ignore"):
      return np.bincount(group, weights=values, minlength=num_groups) / count

  rate, mean_prediction = mean(labels), mean(probs)
  columns = {
      "auc": grouped_auc(labels, probs, group, num_groups),
      "mae": mean(np.abs(labels - probs)),
      "logloss": mean(-(labels * np.log(probs) + (1 - labels) * np.log1p(-probs))),
      # Mean prediction over observed rate: 1 is calibrated, > 1 over-predicts.
      "calibration": np.where(rate > 0, mean_prediction / np.where(rate > 0, rate, 1), np.nan),
      "mean_prediction": mean_prediction,
      "observed_rate": rate,
  }
  return [{**{k: float(v[g]) for k, v in columns.items()}, "count": int(count[g])}
          if count[g] else {"count": 0} for g in range(num_groups)]


def task_slices(columns: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray]):
  """(task, labels, predictions, its rows: a mask or slice of the columns' rows) of each
  task on its own rows; probs has 'ctr' and 'cvr', or 'ctr' alone for CTR-only data."""
  every = slice(None)
  yield "ctr", columns["click"], probs["ctr"], every
  if "cvr" not in probs:
    return
  clicked = columns["click"] > 0.5
  yield "cvr", columns["conversion"][clicked], probs["cvr"][clicked], clicked
  yield "ctcvr", columns["conversion"], probs["ctr"] * probs["cvr"], every


def report(split: str, columns: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray],
           scenes: tuple[str, ...]) -> dict[str, float]:
  """Flat '<split>/<scene>/<task>/<metric>' dict for every scene, 'all', and task."""
  by_task = {}
  for task, labels, preds, rows in task_slices(columns, probs):
    by_task[task] = (grouped_task_metrics(labels, preds, columns["scene"][rows], len(scenes))
                     + [task_metrics(labels, preds)])
  return {f"{split}/{scene_name}/{task}/{metric}": value
          for s, scene_name in enumerate(tuple(scenes) + ("all",))
          for task, per_scene in by_task.items()
          for metric, value in per_scene[s].items()}


def format_table(results: Mapping[str, float], split: str, scenes: tuple[str, ...],
                 metrics=("auc", "mae", "logloss", "calibration")) -> str:
  """A text table: one row per (scene, task), oracle AUC beside the model's when known."""
  has_oracle = any(k.startswith("oracle/") for k in results)
  header = ["scene", "task", "count"] + list(metrics) + (["oracle_auc", "auc/oracle"]
                                                         if has_oracle else [])
  rows = []
  # The tasks of the report: CTR-only data has no cvr or ctcvr rows.
  tasks = [t for t in tasks_lib.ALL if f"{split}/all/{t}/count" in results]
  for scene in tuple(scenes) + ("all",):
    for task in tasks:
      prefix = f"{split}/{scene}/{task}"
      row = [scene, task, str(results.get(f"{prefix}/count", 0))]
      row += [f"{results.get(f'{prefix}/{m}', float('nan')):.4f}" for m in metrics]
      if has_oracle:
        oracle = results.get(f"oracle/{scene}/{task}/auc", float("nan"))
        # A tiny scene's oracle can rank at exactly 0.5 (e.g. one positive): no lift then.
        lift = ((results.get(f"{prefix}/auc", float("nan")) - 0.5) / (oracle - 0.5)
                if oracle != 0.5 else float("nan"))
        row += [f"{oracle:.4f}", f"{lift:.1%}"]
      rows.append(row)
  widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
  lines = ["  ".join(str(x).rjust(w) for x, w in zip(r, widths)) for r in [header] + rows]
  return "\n".join(lines)
