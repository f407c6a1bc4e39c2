"""Early stopping of a phase on the validation rows.

`EarlyStopping` follows one run of one phase (a schedule segment): every `eval_every` steps
it scores the phase's model on the validation rows, keeps a copy of the best parameters the
phase trains, and says when `patience` evaluations in a row have not improved on the best
by `min_delta`. The segment then ends, and (with `restore_best`) goes back to its best
parameters. Everything it holds is saved in checkpoints, so a resumed run stops where an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from mtms_jax import losses
from mtms_jax.data import Dataset
from mtms_jax.errors import UserError
from mtms_jax.eval import metrics


def phase_loss(results: Mapping[str, float], phase_config: ml_collections.ConfigDict,
               split_name: str = "val") -> float:
  """The phase's training loss evaluated on a report: the weighted sum, over the tasks of its
  loss spec, of each task's mean log loss on its rows (CVR on clicked rows), as in training."""
  weights = dict(phase_config.get("loss_weights", {}))
  return sum(weights.get(t, 1.0) * results[f"{split_name}/all/{t}/logloss"]
             for t in losses.parse_loss(phase_config.loss))


LOWER_IS_BETTER = ("loss", "logloss", "mae")


def metric_mode(metric: str, mode: str) -> str:
  """'min' or 'max' for `metric`; mode 'auto' infers it from the metric's name."""
  if mode in ("min", "max"):
    return mode
  if mode != "auto":
    raise UserError(f"early_stopping.mode={mode!r}; expected 'auto', 'min' or 'max'")
  name = metric.rsplit("/", 1)[-1]
  if name in LOWER_IS_BETTER:
    return "min"
  if name == "auc":
    return "max"
  raise UserError(f"early_stopping.metric={metric!r}: set early_stopping.mode to 'min' or "
                  "'max' (only loss, logloss, mae and auc are inferred)")


# Early stopping
@jax.jit
def copy_tree(tree):
  """A copy in new buffers: the update donates the state, so a kept best must not alias it."""
  return jax.tree.map(jnp.copy, tree)


@dataclasses.dataclass
class EarlyStopping:
  """The early-stopping state of one segment; see the module docstring.

  best_params holds the segment's trained subtrees ({key: params[key]}) at its best
  evaluation, when restore_best is set.
  """
  mode: str
  patience: int
  min_delta: float
  restore_best: bool
  best_score: float = math.nan
  best_step: int = -1
  bad_evals: int = 0
  best_params: dict | None = None

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> EarlyStopping:
    es = config.early_stopping
    return cls(metric_mode(es.metric, es.mode), es.patience, es.min_delta, es.restore_best)

  def improved(self, score: float) -> bool:
    if math.isnan(score):
      return False
    if math.isnan(self.best_score):
      return True
    if self.mode == "min":
      return score < self.best_score - self.min_delta
    return score > self.best_score + self.min_delta

  def update(self, score: float, step: int, trained: dict) -> bool:
    """Records an evaluation at `step` (steps into the segment) of parameters `trained`;
    returns whether the segment should stop."""
    if self.improved(score):
      self.best_score, self.best_step, self.bad_evals = score, step, 0
      if self.restore_best:
        self.best_params = copy_tree(trained)
      return False
    self.bad_evals += 1
    return 0 < self.patience <= self.bad_evals

  def to_json(self) -> dict:
    """What a checkpoint's progress item keeps (best_params are saved as their own item)."""
    return {"best_score": None if math.isnan(self.best_score) else self.best_score,
            "best_step": self.best_step, "bad_evals": self.bad_evals,
            "has_best_params": self.best_params is not None}

  def load_json(self, saved: Mapping):
    self.best_score = math.nan if saved["best_score"] is None else saved["best_score"]
    self.best_step, self.bad_evals = saved["best_step"], saved["bad_evals"]


def check_validation_metrics(config: ml_collections.ConfigDict, val_data: Dataset):
  """Fails before training, not at the first save or evaluation, on a best-checkpoint or
  early-stopping metric that the validation rows cannot score."""
  constant = np.full(len(val_data), 0.5)
  known = metrics.report("val", val_data.columns, dict.fromkeys(val_data.schema.tasks, constant),
                         val_data.schema.scenes)
  aucs = sorted(k for k in known if k.endswith("/auc"))
  best = config.checkpoint.best_metric
  if best and best not in known:
    raise UserError(f"config.checkpoint.best_metric={best!r} is not a validation metric; "
                    f"expected one of {aucs}, or another metric than auc")
  for phase in config.schedule.order:
    es = config.phases[phase].early_stopping
    if es.metric != "loss" and es.metric not in known:
      raise UserError(f"config.phases.{phase}.early_stopping.metric={es.metric!r}: expected "
                      f"'loss' (the phase's loss on the validation rows) or a validation "
                      f"metric, e.g. one of {aucs}")
    if es.evals_per_epoch <= 0:
      raise UserError(f"config.phases.{phase}.early_stopping.evals_per_epoch="
                      f"{es.evals_per_epoch}: expected > 0")
    EarlyStopping.from_config(config.phases[phase])     # checks the mode
