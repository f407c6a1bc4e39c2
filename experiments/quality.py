r"""Quality at defaults: MTMS and every joint model (ESMM, MMoE, PLE, Shared-Bottom, STAR,
...: experiments/common.JOINT_MODELS) on held-out rows of the benchmark's workload, whose true
probabilities are known (mtms_jax/runs/quality.py).

  make quality                     # 3 seeds at defaults, plus 1/2/3-epoch curves: 30 min (2 cores)
  make quality ARGS="--config.compare.seeds=1"

Every model runs at its defaults (experiments/common.py): early stopping on the validation
rows (the held-out tail of the training rows), nothing tuned on the test rows, data seed 1
(the defaults were tried on seed 0). Writes quality.md / quality.json (the README's
Quality table) and the comparison's table.md (changes against ESMM with DeLong's test) to
checkpoints/quality/. Expect every model's default run within 0.01 AUC of its best epoch,
the oracle well above everyone, and the known-fields logistic regression near the best.
"""

import ml_collections

from experiments import common


def rows(focus):
  del focus     # every row trains on every scene
  return {
      "mtms": common.mtms_row("MTMS", "none", "ctr+cvr+ctcvr", "ctr+cvr+ctcvr", ()),
      **common.joint_rows(),
  }


def get_config(arg=None):
  flags = common.parse_arg(arg)
  config = common.compare_config(
      ",".join(["zipf"] + sorted(flags)), rows, baseline="esmm", tasks=("ctr", "cvr", "ctcvr"),
      metrics=("auc", "calibration"), layout="columns", seeds=3,
      title="Quality at defaults: the bench workload, held-out rows")
  config.quality = ml_collections.ConfigDict({"curve_epochs": (1, 2, 3)})
  if "smoke" in flags:
    config.compare.order = ("mtms", "esmm")
    config.compare.seeds = 1
    config.quality.curve_epochs = (1,)
  return config
