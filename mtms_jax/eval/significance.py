"""Paired significance tests for two models scored on the same test rows.

The paper's gains are fractions of a percent of AUC, below what a glance at two numbers can
tell from noise, so every difference a comparison table shows carries a p-value.

- `delong`: DeLong's test for two correlated ROC curves (DeLong, DeLong & Clarke-Pearson,
  Biometrics 1988), in the O(n log n) form of Sun & Xu (IEEE SPL 2014): the structural
  components (placement values) come from three mid-rankings instead of the n_pos x n_neg
  comparison matrix, so it runs on millions of rows.
- `paired_mae`: a paired t-test on per-row absolute errors; with the thousands of rows of a
  test day the mean difference is close to normal, so the t-test is the plain choice.

Both tests treat the predictions as fixed and the test rows as the sample: they say whether
the difference would hold on more rows like these, not across training seeds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats


@dataclasses.dataclass(frozen=True)
class PairedTest:
  """Metric of model a and of model b on the same rows, and the two-sided p of a != b."""
  a: float
  b: float
  z: float
  p: float


def placement_values(labels: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray,
                                                                          np.ndarray]:
  """AUC and DeLong's structural components of one score vector, by mid-ranks.

  Args:
    labels: (N,) 0/1 labels, both classes present.
    scores: (N,) scores, higher meaning positive; ties count one half.

  Returns:
    (auc, v10, v01): v10 (M,) for each positive the fraction of negatives it outranks,
    v01 (N - M,) for each negative the fraction of positives that outrank it.
  """
  positive = np.asarray(labels) > 0.5
  scores = np.asarray(scores, np.float64)
  pos, neg = scores[positive], scores[~positive]
  m, n = pos.size, neg.size
  ranks = stats.rankdata(np.concatenate([pos, neg]))       # mid-ranks among all rows
  # A positive's rank among all rows minus its rank among positives counts the negatives
  # below it (ties one half); likewise for a negative and the positives below it.
  v10 = (ranks[:m] - stats.rankdata(pos)) / n
  v01 = 1.0 - (ranks[m:] - stats.rankdata(neg)) / m
  return float(v10.mean()), v10, v01


def delong(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> PairedTest:
  """DeLong's test of AUC(a) == AUC(b) for two score vectors on the same rows.

  Example:
    t = delong(labels, model_probs, baseline_probs)
    print(f"AUC {t.a:.4f} vs {t.b:.4f}, p = {t.p:.3g}")

  Returns NaN for z and p with fewer than two rows of either class (NaN AUCs too with one
  class only). When the placement values of a and b coincide (the same ranking) the
  variance is 0 and p is 1.
  """
  labels = np.asarray(labels) > 0.5
  if labels.all() or not labels.any():
    return PairedTest(float("nan"), float("nan"), float("nan"), float("nan"))
  auc_a, v10_a, v01_a = placement_values(labels, scores_a)
  auc_b, v10_b, v01_b = placement_values(labels, scores_b)
  if min(v10_a.size, v01_a.size) < 2:       # a variance needs two rows of each class
    return PairedTest(auc_a, auc_b, float("nan"), float("nan"))
  # var(AUC_a - AUC_b) = var(v10_a - v10_b) / M + var(v01_a - v01_b) / N: DeLong's
  # L S L' with the contrast L = (1, -1) applied to the placement values first.
  var = (np.var(v10_a - v10_b, ddof=1) / v10_a.size
         + np.var(v01_a - v01_b, ddof=1) / v01_a.size)
  diff = auc_a - auc_b
  if var <= 0.0:
    z = 0.0 if diff == 0.0 else float(np.sign(diff) * np.inf)
  else:
    z = float(diff / np.sqrt(var))
  return PairedTest(auc_a, auc_b, z, float(2.0 * stats.norm.sf(abs(z))))


def paired_mae(labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray) -> PairedTest:
  """Paired t-test of MAE(a) == MAE(b) (paper Eq. 3) on the same rows."""
  labels = np.asarray(labels, np.float64)
  err_a = np.abs(labels - np.asarray(preds_a, np.float64))
  err_b = np.abs(labels - np.asarray(preds_b, np.float64))
  if labels.size < 2:
    return PairedTest(float("nan"), float("nan"), float("nan"), float("nan"))
  diff = err_a - err_b
  if not diff.any():
    return PairedTest(float(err_a.mean()), float(err_b.mean()), 0.0, 1.0)
  t = stats.ttest_rel(err_a, err_b)
  return PairedTest(float(err_a.mean()), float(err_b.mean()), float(t.statistic),
                    float(t.pvalue))
