r"""Baseline: separate CTR and CVR (loss ctr+cvr), non-shared embeddings (paper Table I row 1).

  make experiment NAME=ctr_cvr

Same data, schedule and networks as quickstart; only the loss differs: CVR learns from
clicked impressions alone, with no CTCVR term tying it to CTR. Both phases use ctr+cvr, so
the ranking network's CTR and CVR heads share its trunk but no loss term. Expect CVR AUC a
little below quickstart's (MTMS) on the same test day.
"""

from experiments import common


def get_config(arg=None):
  config = common.base_config(arg)
  config.phases.embedding.loss = "ctr+cvr"
  config.phases.ranking.loss = "ctr+cvr"
  return config
