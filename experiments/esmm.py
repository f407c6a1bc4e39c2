r"""ESMM: CTR and CVR share embeddings, loss ctr+ctcvr (paper Eq. 1; Table I row 2).

  make experiment NAME=esmm

Embeddings shared by the tasks of a scene (model.sharing='tasks'); CVR is only an
intermediate of CTCVR = CTR x CVR, learned over all impressions. Trained with the same
alternating schedule as MTMS, as in the paper. Expect CTR and CTCVR AUC close to MTMS and
CVR AUC below it where conversions are plentiful (the paper's finding).
"""

from experiments import common


def get_config(arg=None):
  config = common.base_config(arg)
  config.model.sharing = "tasks"
  config.phases.embedding.loss = "ctr+ctcvr"
  config.phases.ranking.loss = "ctr+ctcvr"
  return config
