"""Each knob of mtms_jax/data/regimes.py moves the statistic it claims to move."""

import hashlib
import time

import numpy as np
import pytest

from mtms_jax.data import regimes, synthetic
from mtms_jax.data.describe import describe
from mtms_jax.errors import UserError

SMALL = {"rows_per_day": 5000, "num_days": 2, "num_users": 200, "num_ads": 60}


def test_synthetic_defaults_unchanged():
  """Today's built-in data, draw for draw (hash taken before the regime generator existed)."""
  data = synthetic.load(rows_per_day=2000)
  digest = hashlib.sha256()
  for k in sorted(data.columns):
    digest.update(np.ascontiguousarray(data.columns[k]).tobytes())
  for k in sorted(data.truth):
    digest.update(np.round(data.truth[k], 6).tobytes())
  assert digest.hexdigest() == (
      "898415195ce332cddfb87ba880b8cfb72135eca7501fd90ced5f3ce9c92b4ffa")


def _scene_logits(similarity, n=2000, seed=0):
  """Click and conversion logits of the same rows as seen in scene 0 and in scene 1."""
  rng = np.random.default_rng(seed)
  world = regimes._make_world(rng, 2, 200, 50, 5, 5, 4, 8, 0.4, similarity)
  base = {"user": rng.integers(0, 200, n), "ad": rng.integers(0, 50, n),
          "context": rng.integers(0, 4, n), "dense": rng.standard_normal(n)}
  return [regimes._logits(world, {**base, "scene": np.full(n, s)}, np.zeros(n), 1.5, 1.0)
          for s in (0, 1)]


def test_similarity_one_is_identical_scenes_and_zero_unrelated():
  (ctr0, cvr0), (ctr1, cvr1) = _scene_logits(1.0)
  np.testing.assert_allclose(ctr0, ctr1)
  np.testing.assert_allclose(cvr0, cvr1)
  # Averaged over worlds: one world's few context and dense effects make its own noise.
  corr = {sim: np.mean([[np.corrcoef(a, b)[0, 1] for a, b in zip(*_scene_logits(sim, seed=k))]
                        for k in range(10)], axis=0)
          for sim in (0.0, 0.5, 0.9)}
  for task in (0, 1):
    assert abs(corr[0.0][task]) < 0.15 < corr[0.5][task] < corr[0.9][task] < 0.95


def test_id_shift_and_overlap_move_popularity_and_id_sets():
  rng = np.random.default_rng(0)
  same = regimes._popularity(rng, 3, 100, id_shift=0.0, id_overlap=1.0, skew=1.0)
  np.testing.assert_allclose(same, np.broadcast_to(same[0], same.shape))
  shifted = regimes._popularity(rng, 3, 100, id_shift=1.0, id_overlap=1.0, skew=1.0)
  assert 0.5 * np.abs(shifted[0] - shifted[1]).sum() > 0.3
  disjoint = describe(regimes.load(num_scenes=3, id_overlap=0.0, **SMALL), "ad")
  assert disjoint["item_jaccard"] == 0.0
  half = describe(regimes.load(num_scenes=3, id_overlap=0.5, **SMALL), "ad")
  assert 0.25 < half["item_jaccard"] < 0.75


def test_conversion_rate_and_strength():
  sparse = regimes.load(conversion_rate=0.02, **SMALL)
  rich = regimes.load(conversion_rate=0.4, **SMALL)
  assert describe(sparse, "ad")["conversions_per_click"][0] < 0.05
  assert describe(rich, "ad")["conversions_per_click"][0] > 0.3
  flat = regimes.load(cvr_strength=0.0, **SMALL)
  for s in (0, 1):      # no id says anything about conversion: one p(cvr) per scene
    assert np.ptp(flat.truth["cvr"][flat.columns["scene"] == s]) < 1e-12
  assert np.ptp(rich.truth["cvr"][rich.columns["scene"] == 0]) > 0.5


def test_hundred_zipf_scenes_are_quick_and_follow_the_exponent():
  start = time.perf_counter()
  data = regimes.load(num_scenes=100, scene_size_exponent=1.2, rows_per_day=50_000)
  assert time.perf_counter() - start < 10
  counts = np.bincount(data.columns["scene"], minlength=100)
  assert counts.min() > 0
  ranks = np.arange(1, 21)             # the 20 largest scenes: enough rows to fit a slope
  slope = np.polyfit(np.log(ranks), np.log(counts[:20]), 1)[0]
  assert abs(slope + 1.2) < 0.1
  equal = np.bincount(regimes.load(num_scenes=4, scene_size_exponent=0.0,
                                   **SMALL).columns["scene"])
  assert np.ptp(equal) / equal.mean() < 0.1


def test_history_days_come_before_the_window():
  data = regimes.load(history_days=3, **SMALL)
  assert np.unique(data.columns["day"]).tolist() == [0, 1, 2, 3, 4]
  assert len(data) == 5 * SMALL["rows_per_day"]


@pytest.mark.parametrize("knob", [{"scene_similarity": 1.5}, {"id_overlap": -0.1},
                                  {"history_days": -1}, {"num_scenes": 0},
                                  {"id_overlap": 0.0, "num_ads": 5, "num_scenes": 10}])
def test_bad_knobs_are_user_errors(knob):
  with pytest.raises(UserError, match="config.data.kwargs"):
    regimes.load(**{**SMALL, **knob})
