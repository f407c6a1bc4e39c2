import numpy as np

from mtms_jax.data import synthetic


def test_rates_labels_and_truth():
  data = synthetic.load(rows_per_day=20_000, num_days=2, click_rate=0.1, conversion_rate=0.2,
                        seed=3)
  c = data.columns
  assert len(data) == 40_000
  assert set(np.unique(c["day"])) == {0, 1}
  assert abs(data.truth["ctr"].mean() - 0.1) < 1e-6            # solved exactly
  clicked = c["click"] == 1
  assert abs(c["click"].mean() - 0.1) < 0.01
  assert abs(c["conversion"][clicked].mean() - 0.2) < 0.03
  assert np.all(c["conversion"][~clicked] == 0)                  # conversions only after clicks
  # Two scenes, about 60/40, over one shared id space.
  share = np.mean(c["scene"] == 0)
  assert 0.58 < share < 0.67
  users0 = set(c["ids"][c["scene"] == 0, 0])
  users1 = set(c["ids"][c["scene"] == 1, 0])
  assert len(users0 & users1) > 0.9 * len(users0 | users1)


def test_deterministic_by_seed():
  a = synthetic.load(rows_per_day=500, num_days=1, seed=5)
  b = synthetic.load(rows_per_day=500, num_days=1, seed=5)
  c = synthetic.load(rows_per_day=500, num_days=1, seed=6)
  np.testing.assert_array_equal(a.columns["ids"], b.columns["ids"])
  assert not np.array_equal(a.columns["ids"], c.columns["ids"])


def test_scenes_differ_but_share_structure():
  """Same (user, ad) pairs get correlated but different p(click) in the two scenes."""
  rng = np.random.default_rng(0)
  world = synthetic._make_world(rng, 2, 200, 50, 5, 5, 4, 8, 0.4, 0.5)
  users, ads = rng.integers(0, 200, 5000), rng.integers(0, 50, 5000)
  logits = []
  for s in (0, 1):
    rows = {"scene": np.full(5000, s), "user": users, "ad": ads,
            "context": np.zeros(5000, int), "dense": np.zeros(5000)}
    logits.append(synthetic._logits(world, rows, np.zeros(5000), 1.5, 1.5)[0])
  corr = np.corrcoef(*logits)[0, 1]
  assert 0.3 < corr < 0.95
