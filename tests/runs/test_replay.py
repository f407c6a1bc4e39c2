"""Auction replay: the accounting on a hand-computed case, requests, and the experiment."""

import json

import numpy as np
import pytest

from experiments import replay as replay_experiment
from mtms_jax.errors import UserError
from mtms_jax.runs import replay


def test_auction_accounting_on_a_hand_computed_case():
  # Two requests of two candidates, each replayed twice (D = 2).
  ecpm = np.array([[0.1, 0.3],      # request 0 shows candidate 1
                   [0.5, 0.2]])     # request 1 shows candidate 0
  bids = np.array([[9.0, 2.0], [4.0, 7.0]])
  true_ctr = np.array([[0.0, 0.5], [0.8, 0.0]])
  true_cvr = np.array([[0.0, 0.5], [0.25, 0.0]])
  u_click = np.array([[0.4, 0.9],           # draw 0: request 0 clicks (0.4 < 0.5), 1 not
                      [0.6, 0.1]])          # draw 1: request 0 not, request 1 clicks
  u_conversion = np.array([[0.3, 0.0],      # draw 0: request 0 converts (0.3 < 0.5)
                           [0.0, 0.2]])     # draw 1: request 1 converts (0.2 < 0.25)
  sums = replay.auction(ecpm, bids, true_ctr, true_cvr, u_click, u_conversion)
  assert sums == {"impressions": 4, "clicks": 2, "conversions": 2, "charge": 2.0 + 4.0}
  assert replay.measures(sums) == {"cvr": 1.0, "ctcvr": 0.5, "t_charge": 1500.0}
  u_conversion[0, 0] = 0.7                  # request 0's conversion undone
  sums = replay.auction(ecpm, bids, true_ctr, true_cvr, u_click, u_conversion)
  assert replay.measures(sums) == {"cvr": 0.5, "ctcvr": 0.25, "t_charge": 1000.0}


def test_requests_group_one_users_rows():
  users = np.array([3, 0, 3, 1, 0, 3, 1, 2])
  requests = replay.make_requests(users, 2, np.random.default_rng(0))
  # User 3 has 3 rows (one left over), users 0 and 1 two each, user 2 one (left over).
  assert requests.shape == (3, 2)
  assert len(set(requests.ravel().tolist())) == 6
  assert sorted(users[requests][:, 0].tolist()) == [0, 1, 3]
  assert (users[requests][:, 0] == users[requests][:, 1]).all()


def test_interval_is_the_t_interval():
  mean, half = replay.interval([1.0, 2.0, 3.0])
  assert mean == 2.0
  assert half == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-6)


@pytest.fixture(scope="module")
def replay_run(tmp_path_factory):
  """Two models of the experiment, 2 seeds."""
  workdir = tmp_path_factory.mktemp("replay")
  config = replay_experiment.get_config("smoke")
  config.compare.order = ("baseline", "multi_scene")
  return workdir, replay.run(config, str(workdir))


def test_replay_experiment_writes_its_table(replay_run):
  workdir, summary = replay_run
  assert json.loads((workdir / "replay.json").read_text()) == summary
  table = (workdir / "replay.md").read_text()
  for label in ("Baseline (CTR+CVR)", "MTMS multi scene", "oracle", "random", "t_charge"):
    assert label in table
  for name in ("baseline", "multi_scene", "oracle", "random"):
    for m in replay.MEASURES:
      assert np.isfinite(summary[f"{name}/{m}_mean"])
  # Ranking by the true probabilities earns more than ranking at random.
  assert summary["oracle/t_charge_mean"] > summary["random/t_charge_mean"]
  assert "baseline/cvr_delta" not in summary and "oracle/cvr_delta" in summary


def test_replay_checks_its_config_before_training(tmp_path):
  config = replay_experiment.get_config("smoke")
  config.replay.user_field = "no_such_field"
  with pytest.raises(UserError, match="no_such_field"):
    replay.run(config, str(tmp_path))
  assert not list(tmp_path.iterdir())          # checked before anything was trained
