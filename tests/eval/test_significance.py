"""DeLong's fast test against the textbook O(M x N) one, and the paired MAE test."""

import numpy as np
import pytest
from scipy import stats

from mtms_jax.eval import metrics, significance


def _slow_delong(labels, a, b):
  """DeLong et al. 1988 as written: psi over all (positive, negative) pairs, k x k covariances."""
  pos = labels > 0.5
  v10, v01 = [], []
  for s in (a, b):
    diff = s[pos][:, None] - s[~pos][None, :]
    psi = (diff > 0) + 0.5 * (diff == 0)
    v10.append(psi.mean(axis=1))
    v01.append(psi.mean(axis=0))
  cov = np.cov(np.stack(v10)) / pos.sum() + np.cov(np.stack(v01)) / (~pos).sum()
  contrast = np.array([1.0, -1.0])
  aucs = np.array([x.mean() for x in v10])
  z = contrast @ aucs / np.sqrt(contrast @ cov @ contrast)
  return aucs, z, 2 * stats.norm.sf(abs(z))


@pytest.mark.parametrize("seed", range(4))
def test_fast_delong_matches_slow_reference_with_ties(seed):
  rng = np.random.default_rng(seed)
  labels = (rng.random(300) < 0.2 + 0.1 * seed).astype(float)
  a = np.round(rng.random(300) + 0.5 * labels, 1)                # rounding makes many ties
  b = np.round(0.5 * a + rng.random(300) + 0.3 * labels, 2)      # correlated with a
  aucs, z, p = _slow_delong(labels, a, b)
  t = significance.delong(labels, a, b)
  assert (t.a, t.b) == pytest.approx(tuple(aucs), abs=1e-12)
  assert t.a == pytest.approx(metrics.auc(labels, a), abs=1e-12)
  assert t.z == pytest.approx(z, rel=1e-9)
  assert t.p == pytest.approx(p, rel=1e-9)


def test_delong_null_rejects_at_nominal_rate():
  # Two equally good, correlated scorers: p < 0.05 should happen about 5% of the time.
  rng = np.random.default_rng(0)
  rejections = []
  for _ in range(400):
    labels = (rng.random(400) < 0.3).astype(float)
    common = labels + rng.standard_normal(400)
    a, b = common + rng.standard_normal(400), common + rng.standard_normal(400)
    rejections.append(significance.delong(labels, a, b).p < 0.05)
  assert 0.025 <= np.mean(rejections) <= 0.08


def test_delong_finds_a_real_gain_and_is_symmetric():
  rng = np.random.default_rng(1)
  labels = (rng.random(5000) < 0.1).astype(float)
  better = labels + rng.standard_normal(5000)
  worse = better + 1.5 * rng.standard_normal(5000)
  t = significance.delong(labels, better, worse)
  assert t.a > t.b and t.z > 0 and t.p < 1e-6
  back = significance.delong(labels, worse, better)
  assert back.z == pytest.approx(-t.z) and back.p == pytest.approx(t.p)


def test_delong_edge_cases():
  labels = np.array([0, 1, 0, 1, 1, 0])
  scores = np.array([0.1, 0.7, 0.3, 0.6, 0.2, 0.5])
  same = significance.delong(labels, scores, 2 * scores + 1)    # same ranking
  assert same.z == 0.0 and same.p == 1.0
  one_class = significance.delong(np.ones(4), np.arange(4.0), np.arange(4.0))
  assert np.isnan(one_class.a) and np.isnan(one_class.p)
  one_positive = significance.delong(np.array([0, 0, 1]), np.arange(3.0), np.arange(3.0))
  assert one_positive.a == 1.0 and np.isnan(one_positive.p)


def test_paired_mae():
  labels = np.array([1.0, 0.0, 0.0, 1.0] * 50)
  rng = np.random.default_rng(0)
  good = np.clip(labels + 0.2 * rng.standard_normal(200), 0, 1)
  bad = np.clip(labels + 0.4 * rng.standard_normal(200), 0, 1)
  t = significance.paired_mae(labels, good, bad)
  assert t.a == pytest.approx(np.abs(labels - good).mean())
  assert t.b == pytest.approx(np.abs(labels - bad).mean())
  assert t.a < t.b and t.p < 1e-3
  assert significance.paired_mae(labels, good, good).p == 1.0
