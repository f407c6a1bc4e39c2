r"""The paper's online rows of Table II (CVR, CTCVR, t_charge) by auction replay on synthetic
data: baseline, MTMS one scene, MTMS multi scene, ESMM and MMoE, 5 seeds each.

  make experiment NAME=replay
  make experiment NAME=replay RUN=quick ARGS="--config.compare.seeds=2 \
      --config.data.kwargs.rows_per_day=100000"

The models are trained as in experiments/table2.py (the same rows, so a finished table2
workdir's runs are not reused: the replay has its own); then each model ranks the reported
scene's test-day requests by eCPM = bid x pCTR x pCVR and the true probabilities decide
clicks and conversions (mtms_jax/replay.py says how). Writes replay.md and replay.json beside
the comparison's own table files, with an oracle (ranking by the true probabilities) and a
random ranking as the ceiling and the floor. Expect, from the paper: multi scene >= one
scene >= baseline in CTCVR and t_charge.
"""

import ml_collections

from experiments import common, table2

MODELS = ("baseline", "one_scene", "multi_scene", "esmm", "mmoe")


def get_config(arg=None):
  config = common.compare_config(
      arg, lambda focus: {k: v for k, v in table2.rows(focus).items() if k in MODELS},
      baseline="baseline", tasks=("cvr", "ctcvr", "ctr"), metrics=("auc", "mae"),
      layout="columns", title="Auction replay models, offline")
  config.compare.order = MODELS
  config.replay = ml_collections.ConfigDict({
      "candidates": 10,          # ads a request, one user's rows of the test day
      "bid_sigma": 0.5,          # bids lognormal, mean 1
      "draws": 20,               # replays of every request (click and conversion draws)
      "user_field": "user",      # the sparse field whose rows make a request
  })
  return config
