"""Early stopping of a phase on the validation rows.

`EarlyStopping` follows one run of one phase (a schedule segment): every `eval_every` steps
the phase's model is scored on the validation rows; it keeps a copy of the best parameters
the phase trains, and says when `patience` evaluations in a row have not improved on the
best by `min_delta`. The segment then ends, and (with `restore_best`) goes back to its best
parameters. Everything it holds is saved in checkpoints, so a resumed run stops where an
uninterrupted one would.

`Policy` is the one place that knows how a run's segments stop early: it starts a
segment's EarlyStopping, scores its phase, and rebuilds it from a checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mtms_jax.data import Dataset
from mtms_jax.errors import UserError
from mtms_jax.eval import metrics
from mtms_jax.train import progress as progress_lib
from mtms_jax.train import schedule

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

  best_params holds the subtrees the segment's phase trains ({key: params[key] for key in
  trained}) at its best evaluation, when restore_best is set.
  """
  mode: str
  patience: int
  min_delta: float
  restore_best: bool
  trained: tuple[str, ...] = ()       # the params keys the phase trains
  best_score: float = math.nan
  best_step: int = -1
  bad_evals: int = 0
  best_params: dict | None = None

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, trained: tuple[str, ...] = ()
                  ) -> EarlyStopping:
    es = config.early_stopping
    return cls(metric_mode(es.metric, es.mode), es.patience, es.min_delta, es.restore_best,
               tuple(trained))

  def improved(self, score: float) -> bool:
    if math.isnan(score):
      return False
    if math.isnan(self.best_score):
      return True
    if self.mode == "min":
      return score < self.best_score - self.min_delta
    return score > self.best_score + self.min_delta

  def update(self, score: float, step: int, params: dict) -> bool:
    """Records an evaluation at `step` (steps into the segment) of `params`; returns
    whether the segment should stop."""
    if self.improved(score):
      self.best_score, self.best_step, self.bad_evals = score, step, 0
      if self.restore_best:
        self.best_params = copy_tree({k: params[k] for k in self.trained})
      return False
    self.bad_evals += 1
    return 0 < self.patience <= self.bad_evals

  def end(self, params: dict) -> dict:
    """The parameters the segment ends with: back to its best if it keeps them."""
    return params if self.best_params is None else {**params, **self.best_params}

  def to_json(self) -> dict:
    """What a checkpoint's progress item keeps (best_params are saved as their own item)."""
    return {"best_score": None if math.isnan(self.best_score) else self.best_score,
            "best_step": self.best_step, "bad_evals": self.bad_evals,
            "has_best_params": self.best_params is not None}

  def load_json(self, saved: Mapping):
    self.best_score = math.nan if saved["best_score"] is None else saved["best_score"]
    self.best_step, self.bad_evals = saved["best_step"], saved["bad_evals"]


@dataclasses.dataclass(frozen=True)
class Policy:
  """How the segments of a run stop early: each phase's config.phases.<phase>.early_stopping,
  the params keys it trains, and its score on the validation rows."""
  phases: ml_collections.ConfigDict                 # config.phases
  trained: Mapping[str, tuple[str, ...]]            # phase -> the params keys it trains
  score: Callable[[str, dict], tuple[float, dict]]  # (phase, params) -> score, what to log

  def start(self, segment: schedule.Segment, params: dict) -> EarlyStopping | None:
    """A fresh EarlyStopping for `segment` (None if it is never scored), its first
    candidate the parameters it starts from (scored, not logged: a resumed run could not
    log it at the same place)."""
    if not segment.eval_every:
      return None
    stopper = self._new(segment.phase)
    stopper.update(self.score(segment.phase, params)[0], 0, params)
    return stopper

  def restore(self, progress: progress_lib.Progress, best: dict | None
              ) -> EarlyStopping | None:
    """The EarlyStopping a checkpoint at `progress` saved, with its `best` item."""
    if not progress.early_stopping:
      return None
    stopper = self._new(progress.phase)
    stopper.load_json(progress.early_stopping)
    stopper.best_params = best
    return stopper

  def abstract_best(self, progress: progress_lib.Progress, abstract_params: dict
                    ) -> dict | None:
    """Shapes and dtypes of the best parameters a checkpoint at `progress` holds, if any."""
    saved = progress.early_stopping
    if not saved or not saved["has_best_params"]:
      return None
    return {k: abstract_params[k] for k in self.trained[progress.phase]}

  def _new(self, phase: str) -> EarlyStopping:
    return EarlyStopping.from_config(self.phases[phase], self.trained[phase])


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
