"""Early stopping of a phase on the validation rows.

`EarlyStopping` follows one run of one phase (a schedule segment): every `eval_every` steps
the phase's model is scored on the validation rows; it keeps a copy of the best parameters
the phase trains, and says when `patience` evaluations in a row have not improved on the
best by `min_delta`. The segment then ends, and (with `restore_best`) goes back to its best
parameters. Everything it holds is saved in checkpoints, so a resumed run stops where an
uninterrupted one would.

`ComponentStopping` (early_stopping.per_component, MTMS's embedding phase) follows each
(scene, task) component of the phase apart, as the paper trains them (Sec. III-C: each
component learns its embeddings independently; only the ranking fine-tune crosses them):
each is scored on its own scene's validation rows and task, keeps its own best, and stops
on its own, a CVR component with few conversions earlier or later than its scene's CTR
component. A stopped component goes back to its best parameters at once and is kept there
(the train state's 'active' mask, read by the update: nothing changes shape, nothing
recompiles), so the components still training see it as it will end; the segment ends
when every component stopped, or at its last step, where each one still training goes
back to its own best.

`Policy` is the one place that knows how a run's segments stop early: it starts a
segment's stopper, scores its phase, and rebuilds it from a checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mtms_jax.data import Dataset
from mtms_jax.errors import UserError
from mtms_jax.eval import metrics
from mtms_jax.train import freezing, schedule
from mtms_jax.train import progress as progress_lib

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

  def evaluated(self, score: float, step: int, state: dict) -> tuple[dict, bool]:
    """`update` with the train state, which it leaves as it is, and whether to stop."""
    return state, self.update(score, step, state["params"])

  def end(self, state: dict) -> dict:
    """The train state the segment ends with: back to its best parameters if it keeps them."""
    if self.best_params is None:
      return state
    return {**state, "params": {**state["params"], **self.best_params}}

  def to_json(self) -> dict:
    """What a checkpoint's progress item keeps (best_params are saved as their own item)."""
    return {"best_score": None if math.isnan(self.best_score) else self.best_score,
            "best_step": self.best_step, "bad_evals": self.bad_evals,
            "has_best_params": self.best_params is not None}

  def load_json(self, saved: Mapping):
    self.best_score = math.nan if saved["best_score"] is None else saved["best_score"]
    self.best_step, self.bad_evals = saved["best_step"], saved["bad_evals"]


# (selected (C,) bools, source params, target params) -> target with the selected
# components' parameters taken from source (`freezing.take_components`, jitted).
TakeComponents = Callable[[np.ndarray, dict, dict], dict]


@dataclasses.dataclass
class ComponentStopping:
  """The early-stopping state of each of the C components of a segment; see the module
  docstring. Scores are (C,) arrays, each component's (`validation.component_score`).

  best_params holds params['embedding'] ({'embedding': ...}) with each component's table
  rows and tower slices at its best evaluation (where best_step >= 0), when restore_best.
  """
  mode: str
  patience: int
  min_delta: float
  restore_best: bool
  take: TakeComponents
  best_score: np.ndarray        # (C,) float64; NaN until a component's score is finite
  best_step: np.ndarray         # (C,) int64; -1 until then
  bad_evals: np.ndarray         # (C,) int64
  active: np.ndarray            # (C,) bool: still training
  best_params: dict | None = None

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, take: TakeComponents,
                  num_components: int) -> ComponentStopping:
    es = config.early_stopping
    return cls(metric_mode(es.metric, es.mode), es.patience, es.min_delta, es.restore_best,
               take, np.full(num_components, math.nan), np.full(num_components, -1),
               np.zeros(num_components, np.int64), np.ones(num_components, bool))

  def improved(self, scores: np.ndarray) -> np.ndarray:
    """EarlyStopping.improved of each active component."""
    scores = np.asarray(scores, np.float64)
    if self.mode == "min":
      better = scores < self.best_score - self.min_delta
    else:
      better = scores > self.best_score + self.min_delta
    first = np.isnan(self.best_score) & ~np.isnan(scores)
    return self.active & (better | first)

  def evaluated(self, scores: np.ndarray, step: int, state: dict) -> tuple[dict, bool]:
    """Records an evaluation at `step` (steps into the segment) of the state's parameters;
    returns the state with the components it stops back at their best and marked stopped,
    and whether every component has stopped."""
    improved = self.improved(scores)
    params = state["params"]
    if self.restore_best and improved.any():
      best = self.best_params or copy_tree({"embedding": params["embedding"]})
      self.best_params = {"embedding": self.take(improved, params, best)["embedding"]}
    self.best_score = np.where(improved, scores, self.best_score)
    self.best_step = np.where(improved, step, self.best_step)
    self.bad_evals = np.where(improved, 0, self.bad_evals + self.active)
    stops = self.active & (0 < self.patience) & (self.patience <= self.bad_evals)
    self.active = self.active & ~stops
    state = {**state, "params": self._back_to_best(stops, params)}
    return self._with_active(state), not self.active.any()

  def end(self, state: dict) -> dict:
    """The train state the segment ends with: every component back to its best, all active
    again for the segments after it."""
    everyone = np.ones_like(self.active)
    state = {**state, "params": self._back_to_best(everyone, state["params"])}
    self.active = everyone
    return self._with_active(state)

  def _back_to_best(self, components: np.ndarray, params: dict) -> dict:
    back = components & (self.best_step >= 0)
    if not self.restore_best or not back.any():
      return params
    return self.take(back, self.best_params, params)

  def _with_active(self, state: dict) -> dict:
    return {**state, "active": jax.device_put(self.active, state["active"].sharding)}

  def to_json(self) -> dict:
    """What a checkpoint's progress item keeps (best_params are saved as their own item)."""
    return {"best_score": [None if math.isnan(x) else float(x) for x in self.best_score],
            "best_step": self.best_step.tolist(), "bad_evals": self.bad_evals.tolist(),
            "active": self.active.tolist(), "has_best_params": self.best_params is not None}

  def load_json(self, saved: Mapping):
    self.best_score = np.array([math.nan if x is None else x for x in saved["best_score"]])
    self.best_step = np.array(saved["best_step"], np.int64)
    self.bad_evals = np.array(saved["bad_evals"], np.int64)
    self.active = np.array(saved["active"], bool)


Stopper = EarlyStopping | ComponentStopping      # what a segment stopped early has


def stopped_apart(config: ml_collections.ConfigDict, model) -> int:
  """C, the model's number of components, when a phase of `config`'s schedule stops its
  components apart (early_stopping.per_component), else 0: the length of the train state's
  'active' mask. UserError where the model or phase has no components to stop apart."""
  apart = [p for p in config.schedule.order
           if config.phases[p].early_stopping.get("per_component", False)]
  for phase in apart:
    check_per_component(type(model), config.model, phase, "config")
  return len(model.component_owners()) if apart else 0


def check_per_component(model_class, model_config: ml_collections.ConfigDict, phase: str,
                        where: str):
  """UserError unless `phase` of a run (`where`: its config key) trains parameters of the
  model's components alone: MTMS's embedding phase (with sharing 'all' its one component
  stops as the phase would, scored on every row and task it serves)."""
  key = f"{where}.phases.{phase}.early_stopping.per_component=True"
  if not hasattr(model_class, "component_owners"):
    raise UserError(f"{key}: model {model_config.name!r} has no per-component parameters "
                    "(MTMS only); set it False")
  if tuple(model_class.phases[phase]) != ("embedding",):
    raise UserError(f"{key}: phase {phase!r} trains {list(model_class.phases[phase])}, "
                    "which every component shares; only the embedding phase stops apart")


@dataclasses.dataclass(frozen=True)
class Policy:
  """How the segments of a run stop early: each phase's config.phases.<phase>.early_stopping,
  the params keys it trains, and its score on the validation rows."""
  phases: ml_collections.ConfigDict                 # config.phases
  trained: Mapping[str, tuple[str, ...]]            # phase -> the params keys it trains
  score: Callable[[str, dict], tuple[float, dict]]  # (phase, params) -> score, what to log
  # Of a model whose embedding phase stops its components apart (`stopped_apart`):
  num_components: int = 0
  take: TakeComponents | None = None

  @classmethod
  def of(cls, config: ml_collections.ConfigDict, model, score) -> Policy:
    num_components = stopped_apart(config, model)
    take = jax.jit(functools.partial(freezing.take_components, model)) if num_components else None
    return cls(config.phases, model.phases, score, num_components, take)

  def start(self, segment: schedule.Segment, state: dict
            ) -> tuple[Stopper | None, dict]:
    """A fresh stopper for `segment` (None if it is never scored), its first candidate the
    parameters it starts from (scored, not logged: a resumed run could not log it at the
    same place), and the train state it leaves."""
    if not segment.eval_every:
      return None, state
    stopper = self._new(segment.phase)
    state, _ = stopper.evaluated(self.score(segment.phase, state["params"])[0], 0, state)
    return stopper, state

  def restore(self, progress: progress_lib.Progress, best: dict | None
              ) -> Stopper | None:
    """The stopper a checkpoint at `progress` saved, with its `best` item."""
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

  def _new(self, phase: str) -> Stopper:
    if self.phases[phase].early_stopping.get("per_component", False):
      return ComponentStopping.from_config(self.phases[phase], self.take, self.num_components)
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
