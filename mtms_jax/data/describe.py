"""How a data set's scenes differ: the statistics that place it in a regime (docs/REGIMES.md).

`describe(data, item_field)` measures, from the labels alone (numpy, seconds):
  - per scene: share of rows, click rate, conversions per click (and both on all rows);
  - between scenes (every pair among the `max_scenes` largest): Jaccard overlap of the item
    sets seen, total-variation distance of item popularity, correlation of per-item click
    rates and of per-item conversions per click (items with enough rows in both scenes);
  - conversion richness per item: conversions per click pooled per item (median), and the
    share of items with at least `min_conversions` conversions.
"""

from __future__ import annotations

import itertools

import numpy as np

from mtms_jax.data import Dataset


def describe(data: Dataset, item_field: str, max_scenes: int = 10, min_rows: int = 20,
             min_conversions: int = 10) -> dict:
  """The statistics of the module docstring, as {name: float or list per scene}."""
  c = data.columns
  field = [f.name for f in data.schema.sparse].index(item_field)
  item = c["ids"][:, field].astype(np.int64)
  num_items = data.schema.sparse[field].vocab_size
  scene, click, conversion = c["scene"], c["click"], c["conversion"]
  num_scenes = data.schema.num_scenes

  def counts(weights=None):
    return np.bincount(scene * num_items + item, weights=weights,
                       minlength=num_scenes * num_items).reshape(num_scenes, num_items)

  rows, clicks, conversions = counts(), counts(click), counts(conversion)
  per_scene_rows = rows.sum(axis=1)
  largest = np.argsort(-per_scene_rows, kind="stable")[:max_scenes]
  pairs = list(itertools.combinations(sorted(largest.tolist()), 2))
  item_clicks, item_conversions = clicks.sum(axis=0), conversions.sum(axis=0)
  clicked = item_clicks > 0
  return {
      "rows": len(data),
      "scene_share": (per_scene_rows / len(data)).tolist(),
      "click_rate": _ratio(clicks.sum(axis=1), per_scene_rows).tolist(),
      "conversions_per_click": _ratio(conversions.sum(axis=1), clicks.sum(axis=1)).tolist(),
      "all_click_rate": float(click.mean()),
      "all_conversions_per_click": float(conversion.sum() / max(click.sum(), 1)),
      "item_jaccard": _mean_over(pairs, lambda i, j: _jaccard(rows[i] > 0, rows[j] > 0)),
      "item_popularity_tv": _mean_over(pairs, lambda i, j: 0.5 * np.abs(
          rows[i] / rows[i].sum() - rows[j] / rows[j].sum()).sum()),
      "item_ctr_correlation": _mean_over(pairs, lambda i, j: _correlation(
          clicks[[i, j]], rows[[i, j]], min_rows)),
      "item_cvr_correlation": _mean_over(pairs, lambda i, j: _correlation(
          conversions[[i, j]], clicks[[i, j]], min_rows)),
      "item_conversions_per_click_median": float(np.median(
          item_conversions[clicked] / item_clicks[clicked])) if clicked.any() else float("nan"),
      "items_with_enough_conversions": float(np.mean(item_conversions >= min_conversions)),
  }


def _ratio(numerator, denominator):
  return numerator / np.maximum(denominator, 1)


def _jaccard(a, b):
  return float((a & b).sum() / max((a | b).sum(), 1))


def _correlation(events, trials, min_rows):
  """Pearson correlation of two scenes' per-item rates, over items with `min_rows` trials
  in both (nan if fewer than 3 such items or a rate is constant)."""
  both = (trials >= min_rows).all(axis=0)
  if both.sum() < 3:
    return float("nan")
  rates = events[:, both] / trials[:, both]
  if (rates.std(axis=1) == 0).any():
    return float("nan")
  return float(np.corrcoef(rates)[0, 1])


def _mean_over(pairs, statistic):
  """The mean of `statistic(i, j)` over scene pairs, nan ignored (nan for one scene)."""
  values = [statistic(i, j) for i, j in pairs]
  values = [v for v in values if not np.isnan(v)]
  return float(np.mean(values)) if values else float("nan")
