import numpy as np
import pytest

from mtms_jax.eval import metrics


def _pairwise_auc(labels, scores):
  """Independent reference: fraction of (positive, negative) pairs ranked right, ties 1/2."""
  pos, neg = scores[labels == 1], scores[labels == 0]
  diff = pos[:, None] - neg[None, :]
  return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_reference_with_ties(seed):
  rng = np.random.default_rng(seed)
  labels = (rng.random(500) < 0.3).astype(float)
  scores = np.round(rng.random(500) + 0.3 * labels, 1)          # rounding makes many ties
  assert metrics.auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)


def test_auc_edge_cases():
  assert metrics.auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
  assert metrics.auc(np.array([0, 0, 1, 1]), np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
  assert metrics.auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
  assert np.isnan(metrics.auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_task_metrics_values():
  labels, probs = np.array([1., 0., 0., 1.]), np.array([0.8, 0.4, 0.2, 0.6])
  m = metrics.task_metrics(labels, probs)
  assert m["mae"] == pytest.approx(np.mean([0.2, 0.4, 0.2, 0.4]))      # paper Eq. 3
  assert m["calibration"] == pytest.approx(0.5 / 0.5)
  assert m["logloss"] == pytest.approx(-np.mean(np.log([0.8, 0.6, 0.8, 0.6])))
  assert m["auc"] == 1.0


def test_report_slices_cvr_to_clicked_rows():
  columns = {"scene": np.array([0, 0, 1, 1, 1]), "click": np.array([1., 1., 1., 0., 1.]),
             "conversion": np.array([1., 0., 0., 0., 1.])}
  probs = {"ctr": np.array([.9, .8, .7, .1, .6]), "cvr": np.array([.6, .3, .2, .9, .7])}
  r = metrics.report("test", columns, probs, ("feed", "search"))
  assert r["test/feed/cvr/count"] == 2
  assert r["test/search/cvr/count"] == 2                         # row 3 was not clicked
  assert r["test/all/ctr/count"] == 5
  assert r["test/search/cvr/auc"] == 1.0
  np.testing.assert_allclose(r["test/all/ctcvr/mean_prediction"], np.mean(
      probs["ctr"] * probs["cvr"]))
  assert "test/feed/ctcvr/mae" in r


def test_table_of_a_scene_whose_oracle_ranks_at_one_half():
  results = {"test/all/ctr/count": 2, "test/all/ctr/auc": 0.7, "oracle/all/ctr/auc": 0.5,
             "test/a/ctr/count": 2, "test/a/ctr/auc": 0.8, "oracle/a/ctr/auc": 0.65}
  table = metrics.format_table(results, "test", ("a",)).splitlines()
  assert table[1].split()[-2:] == ["0.6500", "200.0%"]
  assert table[2].split()[-2:] == ["0.5000", "nan%"]


def test_report_per_scene_equals_each_scenes_own_metrics():
  # The report computes every scene at once (one sort); each scene's figures must be those
  # of its rows alone, ties, one-class and empty scenes included.
  rng = np.random.default_rng(0)
  n, names = 600, ("a", "b", "c", "one_class", "empty")
  scene = rng.choice(4, n, p=[0.5, 0.3, 0.15, 0.05])
  click = (rng.random(n) < 0.4).astype(float)
  click[scene == 3] = 0.0
  columns = {"scene": scene, "click": click, "conversion": click * (rng.random(n) < 0.5)}
  probs = {"ctr": np.round(rng.random(n), 1), "cvr": np.round(rng.random(n), 2)}
  r = metrics.report("val", columns, probs, names)
  for s, name in enumerate(names):
    rows = scene == s
    own = metrics.report("val", {**{k: v[rows] for k, v in columns.items()},
                                 "scene": np.zeros(rows.sum(), int)},
                         {k: v[rows] for k, v in probs.items()}, ("x",))
    for key, value in own.items():
      if key.startswith("val/all/"):
        mine = r[key.replace("val/all/", f"val/{name}/")]
        assert (np.isnan(value) and np.isnan(mine)) or mine == pytest.approx(value, abs=1e-12)
    if rows.any() and s != 3:
      labels = columns["click"][rows]
      assert r[f"val/{name}/ctr/auc"] == pytest.approx(
          _pairwise_auc(labels, probs["ctr"][rows]), abs=1e-12)
  assert np.isnan(r["val/one_class/ctr/auc"])
  assert r["val/empty/ctr/count"] == 0 and "val/empty/ctr/auc" not in r
