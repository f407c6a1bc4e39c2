"""Validation: the rows that stop phases early and pick the best checkpoint, never the test day.

`split` cuts a data set into training days, validation rows and the test day
(`config.validation`):
  day >= 0   that day's rows (neither a training day nor the test day);
  day = -1   the data's own validation split if it has one (`Dataset.splits['val']`), else
             the last `fraction` of every training day's rows, held out of training. The
             tail of a day is its latest rows in logs kept in time order, and a random
             sample of rows drawn independently (the synthetic data sets).
At most `max_rows` of them are scored, evenly spaced, so an evaluation costs the same on
any data size.

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


# ----------------------------------------------------------------------------------------
# The split
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Split:
  train: dict[int, Dataset]       # day -> the rows trained on, in schedule order
  val: Dataset
  test: Dataset


def split(config: ml_collections.ConfigDict, data: Dataset) -> Split:
  """Training days, validation rows and test day of `data` (see the module docstring)."""
  validation = config.validation
  train_days = tuple(config.train_days)
  if config.test_day in train_days:
    raise UserError(f"config.test_day={config.test_day} is also a training day "
                    f"(config.train_days={train_days})")
  test = data.days(config.test_day)
  own_val = (getattr(data, "splits", None) or {}).get("val")
  if validation.day >= 0 or own_val is not None:
    day = validation.day if validation.day >= 0 else own_val
    if day == config.test_day or day in train_days:
      raise UserError(f"config.validation.day={day} is the test day or a training day "
                      f"(train_days={train_days}, test_day={config.test_day}); validation "
                      "needs rows of its own")
    train = {d: data.days(d) for d in train_days}
    val = data.days(day)
  else:
    if not 0 < validation.fraction < 1:
      raise UserError(f"config.validation.fraction={validation.fraction}: expected a share "
                      "of each training day's rows in (0, 1), or set config.validation.day")
    train, held_out = {}, []
    for d in train_days:
      rows = data.days(d)
      keep = len(rows) - round(len(rows) * validation.fraction)
      train[d] = rows.take(np.arange(keep), f"{rows.name}[first {keep} rows]")
      held_out.append(np.flatnonzero(data.columns["day"] == d)[keep:])
    val = data.take(np.concatenate(held_out), name=f"{data.name}[held-out rows]")
  return Split(train, cap_rows(val, validation.max_rows), test)


def cap_rows(data: Dataset, max_rows: int) -> Dataset:
  """At most `max_rows` rows of `data`, evenly spaced (all of them if there are fewer)."""
  if max_rows < 1:
    raise UserError(f"config.validation.max_rows={max_rows}: expected at least 1")
  if len(data) <= max_rows:
    return data
  rows = np.linspace(0, len(data) - 1, max_rows).round().astype(np.int64)
  return data.take(rows, name=f"{data.name}[{max_rows} evenly spaced rows]")


# ----------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------
# Early stopping
# ----------------------------------------------------------------------------------------
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
