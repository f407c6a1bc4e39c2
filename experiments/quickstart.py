r"""MTMS on the built-in synthetic data: 2 scenes, CTR/CVR/CTCVR, full alternating schedule.

  make experiment NAME=quickstart
  make experiment NAME=quickstart ARGS="--config.model.aggregation=mean"

Non-shared embeddings per (scene, task), loss ctr+cvr+ctcvr in both phases; trains on days
0-2 (embedding phase, then ranking fine-tune, each day warm from the day before) and tests on
day 3. Expect, on the test day, CTR and CTCVR AUC at or above 90% of the oracle's (AUC - 0.5)
in every scene; the printed table shows each against the oracle.
"""

from experiments import common


def get_config(arg=None):
  config = common.base_config(arg)
  return config
