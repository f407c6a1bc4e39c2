r"""`make quality`: every model at its defaults on held-out rows of a workload with a known
oracle, and what each would have got after 1, 2, 3 epochs without early stopping.

  make quality                                   # experiments/quality.py, about 30 min on 2 cores
  make quality ARGS="--config.compare.seeds=1 --config.quality.curve_epochs='(1,)'"

The workload (`mtms_jax.data.zipf`, data seed 1: never the draw the defaults were tried on)
knows each row's true p(click) and p(conversion | click), so every AUC stands beside the
oracle's. Nothing is tuned on the test rows: early stopping and checkpoint ranking read the
validation rows (the held-out tail of the training rows, `config.validation`).

Writes, besides the comparison's own files (table.md, ... of `compare.run`, baseline ESMM):
  quality.md    per model: test AUC of CTR, CVR, CTCVR (mean ± std over seeds), the share of
                the oracle's (AUC - 0.5) reached, CTR calibration, the test AUCs after 1, 2,
                3 epochs with early stopping off (seed 0), and how far the default run's
                AUC falls below the best of those epochs (the overfitting check)
  quality.json  the numbers behind it
Two reference rows: the oracle (the true probabilities), and a logistic regression told
which fields carry the labels' signal (fields 0-1 for clicks, 2-3 for conversions, one
weight per id, L2 1.0, fitted on the training rows): roughly what can be learned from these
rows at all, since rare ids are seen too few times for anyone to learn their effect.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import scipy.optimize
import scipy.sparse
from scipy import special

from mtms_jax import rundir, tasks
from mtms_jax.data import registry
from mtms_jax.eval import metrics, validation
from mtms_jax.report import markdown
from mtms_jax.runs import compare


def curve_config(config: ml_collections.ConfigDict, name: str, epochs: int
                 ) -> ml_collections.ConfigDict:
  """Row `name`, seed 0, every phase `epochs` epochs long, early stopping off."""
  run = compare.run_config(config, name, 0)
  for phase in run.phases.values():
    phase.update(epochs=float(epochs), min_steps=0)
    phase.early_stopping.update(patience=0, restore_best=False)
  return run


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The comparison at defaults, the epoch curves, the reference rows; writes quality.md.
  Any data: the tasks are the data's (CTR-only logs: ctr alone), the oracle row needs the
  true probabilities, the logistic regression the zipf workload's known fields."""
  summary = compare.run(config, workdir)
  data = registry.load_data(config.data)
  task_names = tasks.with_derived(data.schema.tasks)
  out = {**summary, **epoch_curves(config, workdir, task_names)}
  if config.data.name == "zipf" and not config.data.get("schema"):   # its fields known
    out.update(reference(config, data))
  default = {name: rundir.read_json(os.path.join(workdir, name, "seed0"), rundir.RESULTS)
             for name in config.compare.order}
  for name in config.compare.order if config.quality.curve_epochs else ():
    out[f"{name}/below_best_epoch"] = max(
        max(out[f"{name}/epochs{e}/{t}/auc"] for e in config.quality.curve_epochs)
        - default[name][f"test/all/{t}/auc"] for t in task_names)
  rundir.write_json(workdir, rundir.QUALITY_JSON, out)
  text = quality_md(config, out, task_names)
  rundir.write_text(workdir, rundir.QUALITY_MD, text + "\n")
  print("\n" + text)
  return out


def epoch_curves(config: ml_collections.ConfigDict, workdir: str, task_names: tuple[str, ...]
                 ) -> dict[str, float]:
  """'<row>/epochs<e>/<task>/auc': seed 0 of each row trained e epochs, early stopping off."""
  curve = {}
  for name in config.compare.order:
    for epochs in config.quality.curve_epochs:
      run_dir = os.path.join(workdir, "epochs", name, str(epochs))
      print(f"\n=== {name}, {epochs} epochs, early stopping off: {run_dir}")
      results = compare.train_or_reuse(curve_config(config, name, epochs), run_dir)
      curve.update({f"{name}/epochs{epochs}/{t}/auc": results[f"test/all/{t}/auc"]
                    for t in task_names})
  return curve


def reference(config: ml_collections.ConfigDict, data) -> dict[str, float]:
  """'logreg/<task>/auc': the known-fields logistic regression on the test rows."""
  days = validation.split(config, data)
  fit_on = days.train[config.train_days[0]]
  click, conversion = fit_on.columns["click"] > 0.5, fit_on.columns["conversion"]
  p_click = _logistic_regression(fit_on, (0, 1), click, days.test)
  clicked = fit_on.take(np.flatnonzero(click))
  p_cvr = _logistic_regression(clicked, (2, 3), conversion[click], days.test)
  report = metrics.report("logreg", days.test.columns, {"ctr": p_click, "cvr": p_cvr},
                          data.schema.scenes)
  return {f"logreg/{t}/auc": report[f"logreg/all/{t}/auc"] for t in tasks.ALL}


def _one_hot(data, fields) -> scipy.sparse.csr_matrix:
  """One column per (field, id) of `fields`: (N, sum of their vocabularies)."""
  parts = []
  for j in fields:
    ids = data.columns["ids"][:, j]
    n, vocab = len(ids), data.schema.sparse[j].vocab_size
    parts.append(scipy.sparse.csr_matrix((np.ones(n), (np.arange(n), ids)), shape=(n, vocab)))
  return scipy.sparse.hstack(parts).tocsr()


def _logistic_regression(train_rows, fields, labels, test_rows, l2: float = 1.0) -> np.ndarray:
  """p(label) on `test_rows` of an L2-penalised logistic regression on the ids of `fields`."""
  x, y = _one_hot(train_rows, fields), np.asarray(labels, np.float64)

  def loss_and_grad(theta):
    z = x @ theta[1:] + theta[0]
    residual = special.expit(z) - y
    loss = np.sum(np.logaddexp(0, z) - y * z) + l2 * theta[1:] @ theta[1:]
    return loss, np.concatenate([[residual.sum()], x.T @ residual + 2 * l2 * theta[1:]])

  theta = scipy.optimize.minimize(loss_and_grad, np.zeros(x.shape[1] + 1), jac=True,
                                  method="L-BFGS-B", options={"maxiter": 300}).x
  return special.expit(_one_hot(test_rows, fields) @ theta[1:] + theta[0])


def quality_md(config: ml_collections.ConfigDict, out: dict, task_names: tuple[str, ...]
               ) -> str:
  """The table of quality.md; the oracle's and the logistic regression's rows and the share
  of the oracle's lift where the run has them, an epoch column per curve epoch."""
  c, epochs = config.compare, tuple(config.quality.curve_epochs)
  oracle = {t: out.get(f"{c.baseline}/oracle/all/{t}/auc_mean") for t in task_names}
  has_oracle = None not in oracle.values()

  def lift(aucs):
    return ["/".join(f"{(a - 0.5) / (oracle[t] - 0.5):.0%}" for a, t in zip(aucs, task_names))
            ] if has_oracle else []
  slash = "/".join(t.upper() for t in task_names)
  header = (["model"] + [f"{t.upper()} AUC" for t in task_names]
            + (["share of oracle lift"] if has_oracle else []) + ["CTR calibration"]
            + [f"{e} ep. ({slash})" for e in epochs]
            + (["below best epoch"] if epochs else []) + ["train s"])
  rows = []
  for name in c.order:
    key = f"{name}/test/all"
    aucs = [out[f"{key}/{t}/auc_mean"] for t in task_names]
    rows.append(
        [c.rows[name].label]
        + [f"{out[f'{key}/{t}/auc_mean']:.4f} ± {out[f'{key}/{t}/auc_std']:.4f}"
           for t in task_names]
        + lift(aucs) + [f"{out[f'{key}/ctr/calibration_mean']:.3f}"]
        + ["/".join(f"{out[f'{name}/epochs{e}/{t}/auc']:.3f}" for t in task_names)
           for e in epochs]
        + ([f"{out[f'{name}/below_best_epoch']:+.4f}"] if epochs else [])
        + [f"{out[f'{name}/train_seconds_mean']:.0f}"])
  blank = [""] * (len(header) - len(task_names) - 1 - has_oracle)
  if has_oracle:
    rows.append(["oracle (true probabilities)"] + [f"{oracle[t]:.4f}" for t in task_names]
                + ["100%"] + blank)
  if "logreg/ctr/auc" in out:
    logreg = [out[f"logreg/{t}/auc"] for t in task_names]
    rows.append(["known-fields logistic regression"] + [f"{a:.4f}" for a in logreg]
                + lift(logreg) + blank)
  lines = [f"**Quality at defaults** (test rows, all scenes; mean ± std over {c.seeds} seeds)",
           "", markdown.table(header, rows)]
  if epochs:
    lines += ["", "Epoch columns: test AUC of seed 0 trained that many epochs a phase with "
              "early stopping off. below best epoch: the largest, over tasks, of the best "
              "epoch's AUC minus the default run's (seed 0); at most 0.01 means no "
              "overfitting collapse."]
  return "\n".join(lines)
