"""Offline metrics per scene and task: AUC (exact), MAE (paper Eq. 3), logloss, calibration.

Slices: CTR and CTCVR over all impressions, CVR over clicked impressions only. Keys of the
flat report are '<split>/<scene>/<task>/<metric>', e.g. 'test/scene0/cvr/auc'; the scene
'all' pools every scene.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import stats

from mtms_jax import tasks as tasks_lib

EPS = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Exact ROC AUC with ties counted as one half (Mann-Whitney U); NaN without both classes."""
  labels = np.asarray(labels) > 0.5
  n_pos = int(labels.sum())
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  ranks = stats.rankdata(np.asarray(scores, np.float64))      # mid-ranks for ties
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def task_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
  labels = np.asarray(labels, np.float64)
  probs = np.clip(np.asarray(probs, np.float64), EPS, 1 - EPS)
  if labels.size == 0:
    return {"count": 0}
  rate = labels.mean()
  return {
      "auc": auc(labels, probs),
      "mae": float(np.abs(labels - probs).mean()),
      "logloss": float(-(labels * np.log(probs) + (1 - labels) * np.log1p(-probs)).mean()),
      # Mean prediction over observed rate: 1 is calibrated, > 1 over-predicts.
      "calibration": float(probs.mean() / rate) if rate > 0 else float("nan"),
      "mean_prediction": float(probs.mean()),
      "observed_rate": float(rate),
      "count": int(labels.size),
  }


def task_slices(columns: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray]):
  """(task, labels, predictions) of each task on its own rows; probs has 'ctr' and 'cvr',
  or 'ctr' alone for CTR-only data."""
  yield "ctr", columns["click"], probs["ctr"]
  if "cvr" not in probs:
    return
  clicked = columns["click"] > 0.5
  yield "cvr", columns["conversion"][clicked], probs["cvr"][clicked]
  yield "ctcvr", columns["conversion"], probs["ctr"] * probs["cvr"]


def report(split: str, columns: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray],
           scenes: tuple[str, ...]) -> dict[str, float]:
  """Flat '<split>/<scene>/<task>/<metric>' dict for every scene, 'all', and task."""
  out = {}
  scene_masks = [(name, columns["scene"] == s) for s, name in enumerate(scenes)]
  for scene_name, mask in scene_masks + [("all", np.ones_like(columns["scene"], bool))]:
    sliced_cols = {k: columns[k][mask] for k in ("click", "conversion") if k in columns}
    sliced_probs = {k: v[mask] for k, v in probs.items()}
    for task, labels, preds in task_slices(sliced_cols, sliced_probs):
      for metric, value in task_metrics(labels, preds).items():
        out[f"{split}/{scene_name}/{task}/{metric}"] = value
  return out


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
