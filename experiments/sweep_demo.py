r"""A sweep to start from: MTMS aggregation x two replicates (data draw and init), 4 points.

  make sweep NAME=sweep_demo              # the 4 points, then the sweep table
  make sweep NAME=sweep_demo ARG=smoke    # seconds-long points, to try the machinery
  make experiment NAME=sweep_demo         # the base config alone

The quickstart model on 200k rows per day (instead of 1M) so that a point takes a minute or
two on a 2-core CPU. Each point trains in checkpoints/sweep_demo/sweep/<point>/, e.g.
'aggregation=mean,seed=1,kwargs.seed=1'; the table (sweep.csv, sweep.md, sweep.png next to
them) is sorted by config.sweep.metric, the test CTCVR AUC over all scenes. Expect 'mean'
below 'concat' (a mean of the components' embeddings loses which component each came from),
and a spread of a few hundredths between the replicates: each draws its own data, with its
own oracle AUC.
"""

from experiments import common


def get_config(arg=None):
  config = common.base_config(arg)
  if "smoke" not in common.parse_arg(arg):
    config.data.kwargs.rows_per_day = 200_000
  return config


def get_hyper(h):
  return h.product([
      h.sweep("config.model.aggregation", ["concat", "mean"]),
      h.zipit([h.sweep("config.seed", [0, 1]),
               h.sweep("config.data.kwargs.seed", [0, 1])]),
  ])
