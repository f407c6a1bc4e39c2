"""Predictions of a trained model: which phase predicts each task, and over a data set."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from mtms_jax import losses, models, rundir, tasks
from mtms_jax.data import Dataset, pipeline
from mtms_jax.eval import metrics


def trained_tasks(loss_spec: str) -> set[str]:
  """The predicted tasks ('ctr', 'cvr') a loss trains; ctcvr = ctr x cvr trains both."""
  terms = losses.parse_loss(loss_spec)
  return {t for t in tasks.PREDICTED if t in terms or tasks.CTCVR in terms}


def prediction_phases(config: ml_collections.ConfigDict, model) -> dict[str, str]:
  """{task: the phase whose outputs predict it}: the model's eval phase for the tasks its
  loss trains; for another task, the last phase of the schedule whose loss trains it (e.g.
  the embedding phase's CTR towers when the ranking phase is fine-tuned on CVR alone, the
  paper's Table I), so that no reported task comes from an untrained head."""
  order = list(config.schedule.order)
  phases = [model.eval_phase] + [p for p in reversed(order) if p != model.eval_phase]
  sources = {}
  for task in model.schema.tasks:
    trained = [p for p in phases if p in order and task in trained_tasks(config.phases[p].loss)]
    sources[task] = trained[0] if trained else model.eval_phase
  return sources


def make_predict_fn(model, phase: str | dict[str, str]):
  """Jitted (params, batch) -> {task: probabilities} of `phase`'s outputs, or of each
  task's own phase ({task: phase}, from `prediction_phases`)."""
  sources = phase if isinstance(phase, dict) else dict.fromkeys(model.schema.tasks, phase)

  def predict(params, batch):
    outputs = {p: models.forward(model, params, batch, p) for p in set(sources.values())}
    return {task: jax.nn.sigmoid(outputs[p][f"{task}_logit"]) for task, p in sources.items()}
  return jax.jit(predict)


def predict(predict_fn, params, data: Dataset, batch_size: int) -> dict[str, np.ndarray]:
  parts = {task: [] for task in data.schema.tasks}
  for batch, n in pipeline.eval_batches(data.columns, batch_size):
    out = jax.device_get(predict_fn(params, batch))
    for k in parts:
      parts[k].append(out[k][:n])
  return {k: np.concatenate(v) for k, v in parts.items()}


def evaluate(predict_fn, params, data: Dataset, batch_size: int, split: str) -> dict:
  results = metrics.report(split, data.columns, predict(predict_fn, params, data, batch_size),
                           data.schema.scenes)
  if data.truth is not None:
    results.update(metrics.report("oracle", data.columns, data.truth, data.schema.scenes))
  return results


def save_predictions(predict_fn, params, data: Dataset, batch_size: int, path: str):
  """Test-day predictions with the labels and scene of every row, as an .npz file."""
  probs = predict(predict_fn, params, data, batch_size)
  rundir.save_npz(path, **probs, **{k: data.columns[k] for k in ("scene", "click", "conversion")
                                    if k in data.columns})
