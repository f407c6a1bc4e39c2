"""The trainer: data -> model -> per-phase optimizers -> alternating schedule -> evaluation.

`train_and_evaluate(config, workdir)` is the whole job; `main.py` only parses flags. Read it
top to bottom: Data | Schedule | Evaluation | Loop; the step functions live in step.py.

Schedule (the paper's alternating update, Sec. III-C): for each training day, in order, and
for `schedule.rounds_per_day` rounds, each phase in `schedule.order` runs for its steps
(`phases.<name>.steps`, or `phases.<name>.epochs` of that day's rows). Each phase has its own
optax transform and optimizer state, kept across alternations, and its own jitted update,
compiled once. The model is then evaluated on `test_day`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import jax
import ml_collections
import numpy as np
import tqdm
from tensorboardX import SummaryWriter

from mtms_jax import metrics, models, step as step_lib
from mtms_jax.data import Dataset, pipeline, registry

# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------
def load_data(config: ml_collections.ConfigDict) -> Dataset:
  """`mtms_jax.data.<config.name>.load(**config.kwargs)`, restricted to `config.scenes` if set."""
  data = registry.load(config.name, **config.get("kwargs", {}))
  return keep_scenes(data, config.scenes) if config.get("scenes") else data


def keep_scenes(data: Dataset, scenes) -> Dataset:
  """Rows of the given scene indices only, renumbered 0..len(scenes)-1, names kept.

  A one-scene model of two-scene data then has one scene's components, not untrained tables
  for the others, and still reports under the scene's own name (e.g. 'test/scene0/...').
  """
  scenes = list(scenes)
  if len(set(scenes)) != len(scenes) or not all(0 <= s < data.schema.num_scenes for s in scenes):
    raise ValueError(f"config.data.scenes={scenes}: expected distinct indices of "
                     f"{data.schema.scenes}")
  kept = data.select(np.isin(data.columns["scene"], scenes))
  renumber = np.zeros(data.schema.num_scenes, np.int32)
  renumber[scenes] = np.arange(len(scenes))
  columns = {**kept.columns, "scene": renumber[kept.columns["scene"]]}
  schema = dataclasses.replace(data.schema, scenes=tuple(data.schema.scenes[s] for s in scenes))
  return Dataset(columns, schema, kept.truth, name=f"{data.name}[scenes {scenes}]")


# ----------------------------------------------------------------------------------------
# Schedule
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Segment:
  """One run of one phase on one day's data."""
  day: int
  round: int
  phase: str
  steps: int


def phase_steps(phase_config: ml_collections.ConfigDict, num_rows: int, batch_size: int) -> int:
  if phase_config.get("steps", 0) > 0:
    return int(phase_config.steps)
  return max(1, math.ceil(phase_config.epochs * num_rows / batch_size))


def make_schedule(config: ml_collections.ConfigDict, rows_per_day: dict[int, int]
                  ) -> list[Segment]:
  return [Segment(day, r, phase,
                  phase_steps(config.phases[phase], rows_per_day[day], config.batch_size))
          for day in config.train_days
          for r in range(config.schedule.rounds_per_day)
          for phase in config.schedule.order]


# ----------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------
def predict(predict_fn, params, data: Dataset, batch_size: int) -> dict[str, np.ndarray]:
  parts = {"ctr": [], "cvr": []}
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


# ----------------------------------------------------------------------------------------
# Loop
# ----------------------------------------------------------------------------------------
class RunWriter:
  """metrics.jsonl and TensorBoard events in the workdir."""

  def __init__(self, workdir: str):
    self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict, **info):
    self.jsonl.write(json.dumps({"step": step, **info, **scalars}) + "\n")
    self.jsonl.flush()
    for k, v in scalars.items():
      if isinstance(v, (int, float)) and math.isfinite(v):
        self.tb.add_scalar(k, v, step)

  def close(self):
    self.jsonl.close()
    self.tb.close()


def check_finite(measurements: dict, step: int, segment: Segment):
  bad = {k: v for k, v in measurements.items() if not math.isfinite(v)}
  if bad:
    raise FloatingPointError(f"non-finite training loss {bad} at step {step}, phase "
                             f"{segment.phase!r}, day {segment.day}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` into `workdir` and returns the flat results dict (also results.json)."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))

  data = load_data(config.data)
  data.schema.save(os.path.join(workdir, "feature_schema.json"))
  train_days = {day: data.days(day) for day in config.train_days}
  test_data = data.days(config.test_day)

  model = models.get_model(data.schema, config.model)
  params = model.init(jax.random.key(config.seed))
  txs = step_lib.make_phase_txs(config, model, params)
  state = step_lib.init_state(params, txs)
  update_fns = {phase: step_lib.make_update_fn(model, tx, phase, config.phases[phase])
                for phase, tx in txs.items()}

  schedule = make_schedule(config, {d: len(ds) for d, ds in train_days.items()})
  writer = RunWriter(workdir)
  progress = tqdm.tqdm(total=sum(s.steps for s in schedule), unit="step", dynamic_ncols=True,
                       mininterval=1.0)
  step = 0
  start = time.time()
  for day, day_data in train_days.items():
    day_segments = [s for s in schedule if s.day == day]
    batches = pipeline.train_iterator(day_data.columns, config.batch_size,
                                      sum(s.steps for s in day_segments),
                                      seed=config.seed * 100_003 + day, name=day_data.name)
    for segment in day_segments:
      progress.set_description(f"day {day} {segment.phase}")
      for i in range(segment.steps):
        state, measurements = update_fns[segment.phase](state, next(batches))
        step += 1
        if step % config.log_every == 0 or i == segment.steps - 1:
          scalars = {f"train/{segment.phase}/{k}": float(v) for k, v in measurements.items()}
          check_finite(scalars, step, segment)
          writer.write(step, scalars, day=day, phase=segment.phase)
          progress.set_postfix(loss=f"{scalars[f'train/{segment.phase}/loss']:.4f}")
        progress.update(1)
  progress.close()
  train_seconds = time.time() - start

  predict_fn = step_lib.make_predict_fn(model, model.eval_phase)
  results = evaluate(predict_fn, state["params"], test_data, config.eval_batch_size, split="test")
  if config.get("save_predictions", False):  # for compare.py's paired significance tests
    probs = predict(predict_fn, state["params"], test_data, config.eval_batch_size)
    np.savez(os.path.join(workdir, "test_predictions.npz"), **probs,
             **{k: test_data.columns[k] for k in ("scene", "click", "conversion")})
  results["train_seconds"] = train_seconds
  results["train_steps"] = step
  writer.write(step, results, day=config.test_day, phase="eval")
  writer.close()
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  print(f"\nTest day {config.test_day} ({len(test_data)} rows), model {config.model.name}, "
        f"{step} steps in {train_seconds:.1f} s:")
  print(metrics.format_table(results, "test", data.schema.scenes))
  return results
