r"""Paper Table II (offline rows): baseline vs MTMS one-scene vs MTMS multi-scene, plus the
field's multi-task models, on the reported scene's test rows.

  make experiment NAME=table2                       # synthetic, 5 seeds per model
  make experiment NAME=table2 RUN=quick ARGS="--config.compare.seeds=2 \
      --config.data.kwargs.rows_per_day=100000"     # a quick look
  .venv/bin/python -m mtms_jax.main --config experiments/table2.py:movielens \
      --workdir checkpoints/table2_movielens        # MovieLens-100K (age groups as scenes)
  .venv/bin/python -m mtms_jax.main --config experiments/table2.py:census \
      --workdir checkpoints/table2_census           # Census-Income: CTR AUC = marital AUC
  (add --config.data.kwargs.click_label=income for the income AUC; one scene, so the
  one- and multi-scene rows train on the same rows)

Models and their training procedure:
  baseline     embedding loss CTR+CVR, non-shared embeddings, the reported scene only
               (Table I row 1); alternating procedure (paper Sec. III-C).
  one_scene    MTMS: embedding loss CTR+CVR+CTCVR, non-shared, the reported scene only
               (Table I row 4); alternating.
  multi_scene  MTMS: as one_scene, on every scene; the ranking phase reads the embeddings
               of all (scene, task) components; alternating.
  esmm, mmoe, ple, shared_bottom, star, ...   every model of
               experiments/common.JOINT_MODELS at its reference sizes, every scene: the
               field's multi-task models (scene as an input) and multi-scene ones (STAR:
               the scene shapes the network); loss CTR+CVR+CTCVR (ESMM: CTR+CTCVR); one
               joint phase (embeddings and network trained together).
The three alternating rows fine-tune (ranking phase) with loss CTR+CVR, the same for all
three, so they differ only where the paper's rows do (embedding loss, scenes). The paper
fine-tunes with CVR alone; CTR+CVR also trains the CTR head, so that CTCVR = CTR x CVR can be
reported.

Reports CVR (clicked rows), CTCVR and CTR (all rows) AUC and MAE in the paper's layout
(measures as rows, models as columns, change against the baseline beside each). Outputs as in
experiments/table1.py. Expect, from the paper: multi-scene > one-scene > baseline in CVR AUC,
and MAE in the reverse order; the paper does not run the field's models (it calls them hard
to fit with hundreds of components).
"""

from experiments import common


def rows(focus):
  one = (focus,)
  return {
      "baseline": common.mtms_row("Baseline (CTR+CVR)", "none", "ctr+cvr", "ctr+cvr", one),
      "one_scene": common.mtms_row("MTMS one scene", "none", "ctr+cvr+ctcvr", "ctr+cvr", one),
      "multi_scene": common.mtms_row("MTMS multi scene", "none", "ctr+cvr+ctcvr", "ctr+cvr",
                                     ()),
      **common.joint_rows(),
  }


def get_config(arg=None):
  return common.compare_config(
      arg, rows, baseline="baseline", tasks=("cvr", "ctcvr", "ctr"), metrics=("auc", "mae"),
      layout="columns", title="Table II: multi-task and multi-scene, offline")
