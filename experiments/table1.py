r"""Paper Table I: loss functions compared in one scene, CVR MAE and AUC against CTR+CVR.

  make experiment NAME=table1                       # synthetic, 5 seeds per row
  make experiment NAME=table1 RUN=quick ARGS="--config.compare.seeds=2 \
      --config.data.kwargs.rows_per_day=100000"     # a quick look
  .venv/bin/python -m mtms_jax.main --config experiments/table1.py:movielens \
      --workdir checkpoints/table1_movielens        # MovieLens-100K (age groups as scenes)

Rows, as in the paper (Sec. IV-A), all the MTMS model trained with the alternating
procedure (embedding phase with the row's loss, then the ranking phase, on each training
day in order), all on the reported scene's data only, all fine-tuned with loss CVR:
  1. CTR+CVR, non-shared embeddings: CTR and CVR trained separately (the baseline).
  2. CTR+CTCVR, shared embeddings (ESMM's loss, paper Eq. 1).
  3. CTR+CVR+CTCVR, shared embeddings (the MTMS loss, Eq. 2).
  4. CTR+CVR+CTCVR, non-shared embeddings (MTMS one-scene).
With fine-tune loss CVR only the ranking network's CVR head is trained, so the table
reports CVR only (on clicked test rows), as the paper's does.

Writes table.md, table.csv, table.png and results.json to the workdir, each (row, seed) run
in <workdir>/<row>/seed<k>/ (reused when rerun). Wall time on a shared 2-core CPU: see
docs/RESULTS.md. Expect, from the paper: every loss but CTR+CTCVR below the baseline's MAE;
CTR+CTCVR below the baseline's AUC; CTR+CVR+CTCVR non-shared best on both.
"""

from experiments import common


def rows(focus):
  one = (focus,)
  return {
      "ctr_cvr": common.mtms_row("CTR+CVR, non-shared", "none", "ctr+cvr", "cvr", one),
      "ctr_ctcvr_shared": common.mtms_row("CTR+CTCVR, shared", "tasks", "ctr+ctcvr", "cvr",
                                          one),
      "mtms_loss_shared": common.mtms_row("CTR+CVR+CTCVR, shared", "tasks", "ctr+cvr+ctcvr",
                                          "cvr", one),
      "mtms_loss": common.mtms_row("CTR+CVR+CTCVR, non-shared", "none", "ctr+cvr+ctcvr",
                                   "cvr", one),
  }


def get_config(arg=None):
  return common.compare_config(
      arg, rows, baseline="ctr_cvr", tasks=("cvr",), metrics=("mae", "auc"), layout="rows",
      title="Table I: loss functions (embedding phase), fine-tune loss CVR, one scene")
