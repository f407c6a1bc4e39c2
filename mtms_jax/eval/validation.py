"""Validation rows: those that stop phases early and pick the best checkpoint, never the test day.

`split` cuts a data set into training days, validation rows and the test day
(`config.validation`):
  day >= 0   that day's rows (neither a training day nor the test day);
  day = -1   the data's own validation split if it has one (`Dataset.splits['val']`), else
             the last `fraction` of every training day's rows, held out of training. The
             tail of a day is its latest rows in logs kept in time order, and a random
             sample of rows drawn independently (the synthetic data sets).
At most `max_rows` of them are scored, evenly spaced, so an evaluation costs the same on
any data size.

`Evaluator` scores parameters on those rows: the metrics that rank checkpoints, and each
phase's early-stopping score, or with early_stopping.per_component each component's
(`component_score`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import ml_collections
import numpy as np

from mtms_jax import errors, losses
from mtms_jax.data import Dataset
from mtms_jax.errors import UserError
from mtms_jax.eval import metrics, prediction
from mtms_jax.train import early_stopping


# The split
@dataclasses.dataclass
class Split:
  train: dict[int, Dataset]       # day -> the rows trained on, in schedule order
  val: Dataset
  test: Dataset


def check(config: ml_collections.ConfigDict, own_val: int | None = None) -> None:
  """Raises UserError for days and validation settings that cannot split: from the config
  alone, or, with `own_val`, the data's own validation day, which stands in for day -1
  (and leaves the fraction unused)."""
  validation, train_days = config.validation, tuple(config.train_days)
  if config.test_day in train_days:
    raise UserError(f"config.test_day={config.test_day} is also a training day "
                    f"(config.train_days={train_days})")
  day = validation.day if validation.day >= 0 else own_val
  if day is not None and (day == config.test_day or day in train_days):
    raise UserError(f"config.validation.day={day} is the test day or a training day "
                    f"(train_days={train_days}, test_day={config.test_day}); validation "
                    "needs rows of its own")
  errors.expect(day is not None or 0 < validation.fraction < 1, "config.validation.fraction",
                validation.fraction, "a share of each training day's rows in (0, 1), or set "
                "config.validation.day")
  errors.expect(validation.max_rows >= 1, "config.validation.max_rows", validation.max_rows,
                "at least 1")


def split(config: ml_collections.ConfigDict, data: Dataset) -> Split:
  """Training days, validation rows and test day of `data` (see the module docstring)."""
  validation = config.validation
  train_days = tuple(config.train_days)
  own_val = (getattr(data, "splits", None) or {}).get("val")
  check(config, own_val)
  test = data.days(config.test_day)
  if validation.day >= 0 or own_val is not None:
    day = validation.day if validation.day >= 0 else own_val
    train = {d: data.days(d) for d in train_days}
    val = data.days(day)
  else:
    train, held_out = {}, []
    for d in train_days:
      rows = data.days(d)
      keep = len(rows) - round(len(rows) * validation.fraction)
      train[d] = rows.take(np.arange(keep), f"{rows.name}[first {keep} rows]")
      held_out.append(np.flatnonzero(data.columns["day"] == d)[keep:])
    val = data.take(np.concatenate(held_out), name=f"{data.name}[held-out rows]")
  return Split(train, cap_rows(val, validation.max_rows), test)


def cap_rows(data: Dataset, max_rows: int) -> Dataset:
  """At most `max_rows` (>= 1) rows of `data`, evenly spaced (all of them if there are fewer)."""
  if len(data) <= max_rows:
    return data
  rows = np.linspace(0, len(data) - 1, max_rows).round().astype(np.int64)
  return data.take(rows, name=f"{data.name}[{max_rows} evenly spaced rows]")


# Scoring on the validation rows
def phase_loss(results: Mapping[str, float], phase_config: ml_collections.ConfigDict,
               split_name: str = "val") -> float:
  """The phase's training loss evaluated on a report: the weighted sum, over the tasks of its
  loss spec, of each task's mean log loss on its rows (CVR on clicked rows), as in training."""
  weights = dict(phase_config.get("loss_weights", {}))
  return sum(weights.get(t, 1.0) * results[f"{split_name}/all/{t}/logloss"]
             for t in losses.parse_loss(phase_config.loss))


def component_metric(metric: str) -> str:
  """The metric each component is scored on, by name: 'logloss' for the phase's 'loss'."""
  return "logloss" if metric == "loss" else metric.rsplit("/", 1)[-1]


def component_score(report: Mapping[str, float], metric: str, scene: str,
                    tasks: tuple[str, ...]) -> float:
  """A component's early-stopping score, on the validation rows and tasks it serves (its
  scene's and one task with sharing 'none', the scene's tasks with 'tasks', every row and
  task with 'all': scene 'all'): metric 'loss' is the sum of
  its tasks' mean log losses (CVR on clicked rows), a metric '<split>/<scene>/<task>/<m>'
  the mean of its tasks' <m>. NaN where its scene has no validation rows of a task it serves
  (e.g. no clicked rows in a small scene): it is never scored better, and so stops after
  `patience` evaluations (train/early_stopping.py)."""
  values = [report.get(f"val/{scene}/{task}/{component_metric(metric)}", math.nan)
            for task in tasks]
  return float(sum(values) if metric == "loss" else np.mean(values))


def component_scores(report: Mapping[str, float], metric: str,
                     components: tuple[tuple[str, tuple[str, ...]], ...],
                     min_rows: int = 0) -> np.ndarray:
  """(C,) early-stopping scores of the components (scene name, tasks): each its own
  `component_score`. With min_rows > 0, the components with fewer validation rows than that
  (of their scarcest task: CVR's are the scene's clicked rows) are scored together, those of
  the same tasks on their rows pooled (each task's count-weighted mean metric, summed over
  tasks for 'loss' as `component_score` sums them: for 'loss' their pooled log loss): they
  then improve and stop together. Why: a score of a few dozen rows is mostly noise, and
  stopping on it stops a small scene's components at a lucky evaluation, early."""
  scores = np.array([component_score(report, metric, scene, tasks)
                     for scene, tasks in components])
  if min_rows <= 0:
    return scores
  name = component_metric(metric)

  def rows(scene, task):
    return report.get(f"val/{scene}/{task}/count", 0)

  pools = {}
  for i, (scene, tasks) in enumerate(components):
    if min(rows(scene, task) for task in tasks) < min_rows:
      pools.setdefault(tasks, []).append(i)
  for tasks, members in pools.items():
    pooled = []
    for task in tasks:
      scenes = [components[i][0] for i in members]
      counts = np.array([rows(scene, task) for scene in scenes], np.float64)
      values = np.array([report.get(f"val/{scene}/{task}/{name}", math.nan) for scene in scenes])
      scored = (counts > 0) & np.isfinite(values)     # e.g. an AUC of one class is NaN
      pooled.append(float(counts[scored] @ values[scored] / counts[scored].sum())
                    if scored.any() else math.nan)
    scores[members] = sum(pooled) if metric == "loss" else np.mean(pooled)
  return scores


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """Scores parameters on the validation rows `rows`."""
  rows: Dataset
  phases: ml_collections.ConfigDict          # config.phases: each one's loss and early stopping
  batch_size: int
  predict_fn: Callable                       # the model's predictions, each task from its phase
  phase_predict_fns: Mapping[str, Callable]  # phase -> the predictions of its own outputs
  # (scene name, tasks) of each component, when a phase stops its components apart
  components: tuple[tuple[str, tuple[str, ...]], ...] = ()

  @classmethod
  def of(cls, config: ml_collections.ConfigDict, model, rows: Dataset) -> Evaluator:
    """The evaluator of `model` trained by `config`'s schedule."""
    components = ()
    if early_stopping.stopped_apart(config, model):
      components = tuple(("all" if s is None else rows.schema.scenes[s], tasks)
                         for s, tasks in model.component_owners())
    phase_fns = {phase: prediction.make_predict_fn(model, phase)
                 for phase in config.schedule.order}
    sources = prediction.prediction_phases(config, model)
    # Every task from one phase (the usual case): that phase's function, compiled once.
    one = set(sources.values())
    predict_fn = (phase_fns[next(iter(one))] if len(one) == 1 and one <= set(phase_fns)
                  else prediction.make_predict_fn(model, sources))
    return cls(rows, config.phases, config.eval_batch_size, predict_fn, phase_fns, components)

  def metrics(self, params) -> dict:
    """The model's validation metrics ('val/<scene>/<task>/<metric>'): they rank checkpoints."""
    return self._report(self.predict_fn, params)

  def phase_score(self, phase: str, params) -> tuple[float | np.ndarray, dict]:
    """The phase's early-stopping score on the validation rows, and what to log of it;
    with early_stopping.per_component the (C,) scores of its components."""
    report = self._report(self.phase_predict_fns[phase], params)
    es = self.phases[phase].early_stopping
    score = (phase_loss(report, self.phases[phase]) if es.metric == "loss"
             else report[es.metric])
    scalars = {f"val/{phase}/{es.metric.replace('/', '_')}": score}
    scalars.update({f"val/{phase}/{task}/auc": report[f"val/all/{task}/auc"]
                    for task in self.rows.schema.metric_tasks})
    if es.get("per_component", False):
      score = component_scores(report, es.metric, self.components, es.get("min_rows", 0))
      name = component_metric(es.metric)
      scalars.update({f"val/{phase}/{scene}/{'+'.join(tasks)}/{name}": float(x)
                      for (scene, tasks), x in zip(self.components, score)})
    return score, scalars

  def _report(self, predict_fn, params) -> dict:
    probs = prediction.predict(predict_fn, params, self.rows, self.batch_size)
    return metrics.report("val", self.rows.columns, probs, self.rows.schema.scenes)
