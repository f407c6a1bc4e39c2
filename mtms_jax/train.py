"""The trainer: data -> model -> per-phase optimizers -> alternating schedule -> evaluation.

`train_and_evaluate(config, workdir)` is the whole job; `main.py` only parses flags. Read it
top to bottom: Data | Schedule | Evaluation | Loop | Train and evaluate | Day by day; the
step functions live in step.py, checkpoints in checkpoint.py.

Schedule (the paper's alternating update, Sec. III-C): for each training day, in order, and
for `schedule.rounds_per_day` rounds, each phase in `schedule.order` runs for its steps
(`phases.<name>.steps`, or `phases.<name>.epochs` of that day's rows). Each phase has its own
optax transform and optimizer state, kept across alternations, and its own jitted update,
compiled once. The model is then evaluated on `test_day`.

Checkpoints (config.checkpoint): every `every_steps` steps, at the end of training and on
SIGTERM/SIGINT; rerunning the same command resumes from the workdir's latest checkpoint and
ends with the same parameters and results.json as an uninterrupted run (bitwise on CPU).
With `config.daily` set, the run is the paper's day-by-day protocol instead (see Day by day).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from tensorboardX import SummaryWriter

from mtms_jax import (checkpoint, metrics, models, parallel, plots, step as step_lib,
                      validation)
from mtms_jax.data import Dataset, logs, pipeline, registry
from mtms_jax.errors import UserError

# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------
def load_data(config: ml_collections.ConfigDict) -> Dataset:
  """`mtms_jax.data.<config.name>.load(**config.kwargs)`, or the logs of schema file
  `config.schema` if set (mtms_jax/data/logs.py), restricted to `config.scenes` if set."""
  if config.get("schema"):
    data = logs.load(config.schema)
  else:
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
  """One run of one phase on one day's data: at most `steps` updates, scored on the
  validation rows every `eval_every` of them and at its end (0: never) to stop it early."""
  day: int
  round: int
  phase: str
  steps: int
  eval_every: int = 0
  rows: tuple[float, float] = (0.0, 1.0)    # the share of the day's training rows it reads

  @property
  def source(self) -> tuple[int, tuple[float, float]]:
    """What its batches come from: the day and the share of its rows."""
    return self.day, tuple(self.rows)


def phase_steps(phase_config: ml_collections.ConfigDict, num_rows: int, batch_size: int) -> int:
  """`steps` if set, else `epochs` of the day's rows, and at least `min_steps`: a phase on
  little data still gets enough updates (and early stopping ends it when it overfits)."""
  if phase_config.get("steps", 0) > 0:
    return int(phase_config.steps)
  epochs = max(1, math.ceil(phase_config.epochs * num_rows / batch_size))
  return max(epochs, phase_config.get("min_steps", 0))


def eval_every(phase_config: ml_collections.ConfigDict, num_rows: int, batch_size: int) -> int:
  """Steps between validation scores of a segment: `evals_per_epoch` per epoch of the day's
  rows, but at least `min_eval_steps` apart (on little data an epoch is a few steps, and a
  few steps' noise should not stop a phase); 0 when early stopping neither stops nor
  restores."""
  es = phase_config.early_stopping
  if es.patience <= 0 and not es.restore_best:
    return 0
  return max(1, es.get("min_eval_steps", 1),
             math.ceil(num_rows / batch_size / es.evals_per_epoch))


def phase_rows(phase_config: ml_collections.ConfigDict, phase: str) -> tuple[float, float]:
  """(start, stop): the phase trains on that share of each day's training rows."""
  start, stop = (float(x) for x in phase_config.get("rows", (0.0, 1.0)))
  if not 0 <= start < stop <= 1:
    raise UserError(f"config.phases.{phase}.rows=({start}, {stop}): expected 0 <= start < "
                    "stop <= 1, shares of each day's training rows")
  return start, stop


def row_slice(num_rows: int, rows: tuple[float, float]) -> slice:
  return slice(round(num_rows * rows[0]), round(num_rows * rows[1]))


def make_schedule(config: ml_collections.ConfigDict, rows_per_day: dict[int, int]
                  ) -> list[Segment]:
  schedule = []
  for day in config.train_days:
    for r in range(config.schedule.rounds_per_day):
      for phase in config.schedule.order:
        phase_config = config.phases[phase]
        rows = phase_rows(phase_config, phase)
        s = row_slice(rows_per_day[day], rows)
        num_rows = s.stop - s.start
        schedule.append(Segment(day, r, phase,
                                phase_steps(phase_config, num_rows, config.batch_size),
                                eval_every(phase_config, num_rows, config.batch_size), rows))
  return schedule


# ----------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------
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
  np.savez(path, **probs, **{k: data.columns[k] for k in ("scene", "click", "conversion")
                             if k in data.columns})


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
    validation.EarlyStopping.from_config(config.phases[phase])     # checks the mode


# ----------------------------------------------------------------------------------------
# Loop
# ----------------------------------------------------------------------------------------
# Tests only: 'STEP:SIGNAL', e.g. '7:KILL' or '12:TERM', makes the loop send itself SIGSIGNAL
# right after update STEP, to prove that a run stopped at any step resumes exactly.
TEST_SIGNAL_ENV = "MTMS_TEST_SIGNAL_AT_STEP"


class RunWriter:
  """metrics.jsonl and TensorBoard events in the workdir.

  A resumed run first drops the lines written after the step it resumes from, so that
  metrics.jsonl reads as one uninterrupted run (TensorBoard keeps both copies).
  """

  def __init__(self, workdir: str, resume_step: int):
    path = os.path.join(workdir, "metrics.jsonl")
    rewind_log(path, resume_step)
    self.jsonl = open(path, "a")
    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict, **info):
    self.jsonl.write(json.dumps({"step": step, **info, **scalars}) + "\n")
    self.jsonl.flush()
    for k, v in scalars.items():
      if isinstance(v, (int, float)) and math.isfinite(v):
        self.tb.add_scalar(k, v, step)

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.jsonl.close()
    self.tb.close()


def rewind_log(path: str, step: int):
  """Keeps the lines of `path` up to `step`, minus final evaluations and lines cut by a kill."""
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if record["step"] <= step and record.get("phase") != "eval":
        kept.append(line if line.endswith("\n") else line + "\n")
  write_atomically(path, "".join(kept))


def write_atomically(path: str, text: str):
  """A kill leaves the old file or the new one, never half of one."""
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


class Interrupted(Exception):
  """SIGTERM or SIGINT stopped training; a checkpoint of the step reached was saved."""

  def __init__(self, signum: int, step: int, workdir: str):
    self.signum = signum
    super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; saved a "
                     f"checkpoint in {os.path.join(workdir, checkpoint.CHECKPOINTS)}. Rerun the "
                     "same command (same config and workdir) to resume.")


class StopSignals:
  """While active, SIGTERM and SIGINT only record `signum`, so the loop can save and stop.

  Python delivers signals to the main thread only; elsewhere the handlers stay as they are.
  """

  def __enter__(self):
    self.signum = None
    self.previous = {}
    if threading.current_thread() is threading.main_thread():
      self.previous = {s: signal.signal(s, self._record)
                       for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _record(self, signum, frame):
    del frame
    self.signum = signum

  def __exit__(self, *exc_info):
    for s, handler in self.previous.items():
      signal.signal(s, handler)


def check_finite(measurements: dict, step: int, segment: Segment):
  bad = {k: v for k, v in measurements.items() if not math.isfinite(v)}
  if bad:
    raise FloatingPointError(f"non-finite training loss {bad} at step {step}, phase "
                             f"{segment.phase!r}, day {segment.day}; the checkpoints saved "
                             "before it are kept")


def check_losses(pending: list[tuple[int, Segment, jax.Array]]):
  """Raises at the first non-finite loss among the updates since the last check.

  The losses wait on the device between checks: one transfer per check, not a sync per step.
  """
  values = jax.device_get([loss for _, _, loss in pending])
  for (step, segment, _), value in zip(pending, values):
    check_finite({"loss": float(value)}, step, segment)


@jax.jit
def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


@dataclasses.dataclass
class Loop:
  """Runs the schedule from any step, logging, stopping phases early and saving checkpoints.

  A step is a position in the schedule: segment i covers steps (starts[i], starts[i + 1]].
  A segment stopped early jumps to its end, so positions, not updates done, number the
  logs and checkpoints, and a resumed run finds its place in the schedule from its step.
  """
  config: ml_collections.ConfigDict
  workdir: str
  schedule: list[Segment]
  update_fns: dict
  make_iterator: Callable[[int], grain.DatasetIterator]   # segment index -> its batches
  checkpoints: checkpoint.Checkpoints
  writer: RunWriter
  score_val: Callable[[dict], dict]            # params -> validation metrics of the model
  score_phase: Callable[[str, dict], tuple[float, dict]]  # (phase, params) -> score, scalars
  trained: dict[str, tuple[str, ...]]          # phase -> the params keys it trains
  identity: dict                               # {'config', 'schema', 'schedule'} as JSON
  warm_start: dict | None
  seconds_before: float                        # training time of earlier sessions

  def __post_init__(self):
    self.starts = np.cumsum([0] + [s.steps for s in self.schedule]).tolist()
    self.session_start = time.time()
    self.stopper = None                        # the segment in progress's EarlyStopping
    signal_at = os.environ.get(TEST_SIGNAL_ENV)
    self.signal_at = None
    if signal_at:
      at, name = signal_at.split(":")
      self.signal_at = (int(at), signal.Signals[f"SIG{name}"])

  @property
  def total(self) -> int:
    return self.starts[-1]

  def train_seconds(self) -> float:
    return self.seconds_before + time.time() - self.session_start

  def run(self, state, step: int, batches=None,
          stopper: validation.EarlyStopping | None = None):
    """Trains from `step` to the end; `batches` and `stopper` are the iterator (positioned
    at `step`) and early-stopping state of the segment `step` lies inside, if any."""
    progress = tqdm.tqdm(total=self.total, initial=step, unit="step", dynamic_ncols=True,
                         mininterval=1.0)
    pending = []
    with StopSignals() as stop:
      for index, segment in enumerate(self.schedule):
        start, end = self.starts[index], self.starts[index + 1]
        if step >= end:
          continue
        if step == start:
          batches = self.make_iterator(index)
        progress.set_description(f"day {segment.day} {segment.phase}")
        self.stopper = stopper if step > start else self.start_segment(segment, state)
        stopper = None
        while step < end:
          batch = next(batches)
          # The input pipeline placed the batch on the devices (parallel.place_batch) and the
          # state lives there: a copy here would be a bug that costs a transfer every step.
          with jax.transfer_guard("disallow"):
            state, measurements = self.update_fns[segment.phase](state, batch)
          step += 1
          self.maybe_send_test_signal(step)
          pending.append((step, segment, measurements["loss"]))
          if step % self.config.log_every == 0 or step == end:
            check_losses(pending)
            pending = []
            self.log(step, segment, measurements, progress)
          if self.stopper and ((step - start) % segment.eval_every == 0 or step == end):
            if self.evaluate(state, step, start, segment):
              progress.update(end - step)
              step = end
          if step == end:
            state = self.end_segment(state)
          if self.scheduled_save(step) or stop.signum:
            check_losses(pending)
            pending = []
            self.save(state, step, index, batches)
          if stop.signum:
            progress.close()
            raise Interrupted(stop.signum, step, self.workdir)
          progress.update(1)
    progress.close()
    return state

  def start_segment(self, segment: Segment, state) -> validation.EarlyStopping | None:
    """A fresh EarlyStopping for `segment`, its first candidate the parameters it starts
    from (scored, not logged: a resumed run could not log it at the same place)."""
    if not segment.eval_every:
      return None
    stopper = validation.EarlyStopping.from_config(self.config.phases[segment.phase])
    score, _ = self.score_phase(segment.phase, state["params"])
    stopper.update(score, 0, self.trained_params(segment.phase, state["params"]))
    return stopper

  def evaluate(self, state, step: int, start: int, segment: Segment) -> bool:
    """Scores the segment's model on the validation rows; returns whether to stop it."""
    score, scalars = self.score_phase(segment.phase, state["params"])
    self.writer.write(step, scalars, day=segment.day, phase="early_stopping")
    return self.stopper.update(score, step - start,
                               self.trained_params(segment.phase, state["params"]))

  def trained_params(self, phase: str, params: dict) -> dict:
    return {k: params[k] for k in self.trained[phase]}

  def end_segment(self, state):
    """Ends the segment in progress: back to its best parameters if it keeps them."""
    stopper, self.stopper = self.stopper, None
    if stopper is None or stopper.best_params is None:
      return state
    return {**state, "params": {**state["params"], **stopper.best_params}}

  def scheduled_save(self, step: int) -> bool:
    return step % self.config.checkpoint.every_steps == 0 or step == self.total

  def maybe_send_test_signal(self, step: int):
    if self.signal_at and step == self.signal_at[0]:
      os.kill(os.getpid(), self.signal_at[1])

  def log(self, step: int, segment: Segment, measurements: dict, progress):
    scalars = {f"train/{segment.phase}/{k}": float(v) for k, v in measurements.items()}
    check_finite(scalars, step, segment)
    self.writer.write(step, scalars, day=segment.day, phase=segment.phase)
    progress.set_postfix(loss=f"{scalars[f'train/{segment.phase}/loss']:.4f}")

  def save(self, state, step: int, index: int, batches):
    """Starts an async save of `state` at `step`, ranked by the validation metric."""
    segment = self.schedule[index]
    if not bool(all_finite(state["params"])):
      raise FloatingPointError(f"non-finite parameters after step {step}, phase "
                               f"{segment.phase!r}, day {segment.day}; not saved")
    ranked = None
    if self.config.checkpoint.best_metric:
      ranked = self.score_val(state["params"])
      # A save on a signal is off the schedule: logging its scores would make the log of a
      # resumed run differ from an uninterrupted one.
      if self.scheduled_save(step):
        self.writer.write(step, ranked, day=segment.day, phase="val")
    progress = {"step": step, "day": segment.day, "round": segment.round,
                "phase": segment.phase, "segment": index, "schedule": self.identity["schedule"],
                "warm_start": self.warm_start, "train_seconds": self.train_seconds(),
                "early_stopping": self.stopper.to_json() if self.stopper else None}
    best = self.stopper.best_params if self.stopper else None
    self.checkpoints.save(step, step_lib.without_scratch(state), batches, progress,
                          self.identity["config"], self.identity["schema"], metrics=ranked,
                          best=best)


# ----------------------------------------------------------------------------------------
# Train and evaluate
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Start:
  """Where training starts: a state, its step, and the iterator positioned there, if any."""
  state: dict
  step: int = 0
  batches: grain.DatasetIterator | None = None
  warm_start: dict | None = None
  seconds_before: float = 0.0
  stopper: validation.EarlyStopping | None = None   # of the segment `step` lies inside


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` into `workdir` and returns the flat results dict (also results.json).

  Rerun with the same config and workdir, it resumes from the workdir's latest checkpoint.
  results.json holds only what the run computes; wall-clock seconds and where the run
  resumed or warm-started from go to run.json.
  """
  if config.get("daily"):
    return train_day_by_day(config, workdir)
  if config.get("add_scene"):
    return train_with_added_scenes(config, workdir)
  # Process 0 of a multi-process run writes the run's files; the others their own copies
  # in process<i>/ (checkpoints are one, written together).
  logdir = parallel.log_dir(workdir)
  os.makedirs(logdir, exist_ok=True)
  data = load_data(config.data)
  days = validation.split(config, data)
  train_days, val_data, test_data = days.train, days.val, days.test
  check_validation_metrics(config, val_data)

  plan = parallel.make_plan(config)
  model = models.get_model(data.schema, parallel.model_config(plan, config.model))
  init_rng = jax.random.key(config.seed)
  schedule = make_schedule(config, {d: len(ds) for d, ds in train_days.items()})
  phase_total = {p: sum(s.steps for s in schedule if s.phase == p) for p in config.schedule.order}
  txs = step_lib.make_phase_txs(config, model, jax.eval_shape(model.init, init_rng), phase_total)
  abstract_state = jax.eval_shape(lambda rng: step_lib.init_state(model.init(rng), txs),
                                  init_rng)
  parallel.check_tables(plan, abstract_state["params"])
  shardings = parallel.state_shardings(plan, abstract_state)
  update_fns = {phase: parallel.compile_update(plan, update_factory(model, tx, phase, config),
                                               shardings)
                for phase, tx in txs.items()}
  predict_fn = step_lib.make_predict_fn(model, step_lib.prediction_phases(config, model))
  phase_predict_fns = {phase: step_lib.make_predict_fn(model, phase) for phase in txs}
  def make_iterator(index: int) -> grain.DatasetIterator:
    """Segment `index`'s batches: shuffles of its day's rows (its share of them), seeded by
    the day, continuing where the segments of the same rows before it were planned to end,
    so each segment reads its own batches whether or not an earlier one stopped early."""
    segment = schedule[index]
    first = sum(s.steps for s in schedule[:index] if s.source == segment.source)
    data = train_days[segment.day]
    columns = {k: v[row_slice(len(data), segment.rows)] for k, v in data.columns.items()}
    return pipeline.train_iterator(columns, config.batch_size, segment.steps,
                                   seed=config.seed * 100_003 + segment.day, name=data.name,
                                   first_batch=first, share=parallel.process_share(),
                                   place=functools.partial(parallel.place_batch, plan))

  def score_val(params) -> dict:
    return metrics.report("val", val_data.columns,
                          predict(predict_fn, params, val_data, config.eval_batch_size),
                          data.schema.scenes)

  def score_phase(phase: str, params) -> tuple[float, dict]:
    """The phase's early-stopping score on the validation rows, and what to log of it."""
    report = metrics.report("val", val_data.columns, predict(
        phase_predict_fns[phase], params, val_data, config.eval_batch_size), data.schema.scenes)
    es = config.phases[phase].early_stopping
    score = (validation.phase_loss(report, config.phases[phase]) if es.metric == "loss"
             else report[es.metric])
    scalars = {f"val/{phase}/{es.metric.replace('/', '_')}": score}
    scalars.update({f"val/{phase}/{task}/auc": report[f"val/all/{task}/auc"]
                    for task in data.schema.metric_tasks})
    return score, scalars

  # What a checkpoint must match to be resumed, as its JSON items read back.
  identity = json.loads(json.dumps({"config": json.loads(config.to_json_best_effort()),
                                    "schema": data.schema.to_dict(),
                                    "schedule": [dataclasses.asdict(s) for s in schedule]}))
  with checkpoint.Checkpoints(workdir, config.checkpoint) as checkpoints:
    start = resume_or_start(config, workdir, model, txs, init_rng, checkpoints, make_iterator,
                            identity, parallel.with_shardings(abstract_state, shardings))
    start.state = jax.device_put(start.state, shardings)
    with open(os.path.join(logdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    data.schema.save(os.path.join(logdir, "feature_schema.json"))
    with RunWriter(logdir, start.step) as writer:
      loop = Loop(config, workdir, schedule, update_fns, make_iterator, checkpoints, writer,
                  score_val, score_phase, model.phases, identity, start.warm_start,
                  start.seconds_before)
      state = loop.run(start.state, start.step, start.batches, start.stopper)
      results = evaluate(predict_fn, state["params"], test_data, config.eval_batch_size,
                         split="test")
      results.update(score_val(state["params"]))
      if config.get("save_predictions", False):   # for compare.py's paired significance tests
        save_predictions(predict_fn, state["params"], test_data, config.eval_batch_size,
                         os.path.join(logdir, "test_predictions.npz"))
      results["train_steps"] = int(state["step"])     # updates done (early stops skip some)
      writer.write(loop.total, results, day=config.test_day, phase="eval")
    best_step = checkpoints.best_step()

  write_atomically(os.path.join(logdir, "results.json"),
                   json.dumps(results, indent=2, sort_keys=True))
  run_info = {"train_seconds": loop.train_seconds(), "resumed_from_step": start.step or None,
              "warm_start": start.warm_start, "best_checkpoint_step": best_step}
  write_atomically(os.path.join(logdir, "run.json"), json.dumps(run_info, indent=2))
  print(f"\nTest day {config.test_day} ({len(test_data)} rows), model {config.model.name}, "
        f"{results['train_steps']} steps, {run_info['train_seconds']:.1f} s of training:")
  print(metrics.format_table(results, "test", data.schema.scenes))
  return results


def update_factory(model, tx, phase: str, config: ml_collections.ConfigDict):
  """axis_name -> the phase's pure update (`step.make_update`), for `parallel.compile_update`."""
  return lambda axis_name: step_lib.make_update(model, tx, phase, config.phases[phase],
                                                config.seed, axis_name)


def resume_or_start(config, workdir, model, txs, init_rng, checkpoints, make_iterator,
                    identity, abstract_state) -> Start:
  """Resume order:
    1. the workdir's own latest readable checkpoint: the run continues where it stopped;
    2. else config.init_from: warm start (the config.init_load subtrees) from another run;
    3. else fresh parameters from config.seed.
  abstract_state: shapes, dtypes and shardings of the train state, which a restore takes.
  """
  def abstract_best(progress: dict):
    saved = progress.get("early_stopping")
    if not saved or not saved["has_best_params"]:
      return None
    return {k: abstract_state["params"][k] for k in model.phases[progress["phase"]]}

  restored = checkpoints.restore_latest(step_lib.without_scratch(abstract_state), make_iterator,
                                        same_run_check(identity, workdir), abstract_best)
  if restored is not None:
    print(f"Resuming {workdir} from its checkpoint at step {restored.step}.")
    progress = restored.progress
    stopper = None
    if progress.get("early_stopping"):
      stopper = validation.EarlyStopping.from_config(config.phases[progress["phase"]])
      stopper.load_json(progress["early_stopping"])
      stopper.best_params = restored.best
    return Start(step_lib.with_scratch(restored.state), restored.step, restored.iterator,
                 progress["warm_start"], progress["train_seconds"], stopper)
  if not config.init_from:
    # Created where it lives: a row-sharded table is never whole on one device.
    init = jax.jit(lambda rng: step_lib.init_state(model.init(rng), txs),
                   out_shardings=jax.tree.map(lambda a: a.sharding, abstract_state))
    return Start(init(init_rng))
  params = model.init(init_rng)
  if config.get("init_new_scenes"):    # a run with scenes added (train_with_added_scenes)
    params, warm = checkpoint.warm_start_new_scenes(
        config.init_from, model, params, lambda schema: models.get_model(schema, config.model))
  else:
    params, warm = checkpoint.warm_start(config.init_from, params, identity["schema"],
                                         config.init_load)
  print(f"Warm start: {', '.join(warm['loaded'])} from {warm['path']}.")
  return Start(step_lib.init_state(params, txs), warm_start=warm)


def same_run_check(identity: dict, workdir: str):
  """(progress, config, schema) of a checkpoint -> raises unless it is this run's."""
  def check(progress: dict, saved_config: dict, saved_schema: dict):
    source = f"the checkpoint in {os.path.join(workdir, checkpoint.CHECKPOINTS)}"
    hint = "Resuming needs the same config and data; use another workdir for a new run."
    checkpoint.check_same("config", source, saved_config, identity["config"], hint)
    checkpoint.check_same("feature schema", source, saved_schema, identity["schema"], hint)
    checkpoint.check_same("schedule (rows per day changed?)", source, progress["schedule"],
                          identity["schedule"], hint)
  return check


# ----------------------------------------------------------------------------------------
# Day by day (the paper's time slots, Sec. IV "Training and Testing")
# ----------------------------------------------------------------------------------------
def day_configs(config: ml_collections.ConfigDict, workdir: str
                ) -> list[tuple[int, str, ml_collections.ConfigDict]]:
  """(test day T, its workdir, its config) for each T in daily.first_test_day..last_test_day.

  Day T trains on days [T - window, T - 1] and tests on T. Its init_from is day T-1's run
  (the first day's is config.init_from), so with init_load=('embedding',) day T starts from
  day T-1's embeddings and a fresh ranking network.
  """
  daily = config.daily
  if daily.window < 1 or daily.last_test_day < daily.first_test_day:
    raise ValueError(f"config.daily={daily.to_dict()}: expected window >= 1 and "
                     "first_test_day <= last_test_day")
  base = config.to_dict()
  del base["daily"]
  runs, init_from = [], config.init_from
  for day in range(daily.first_test_day, daily.last_test_day + 1):
    day_workdir = os.path.join(workdir, f"day{day}")
    day_config = ml_collections.ConfigDict({
        **base, "train_days": tuple(range(day - daily.window, day)), "test_day": day,
        "init_from": init_from})
    runs.append((day, day_workdir, day_config))
    init_from = day_workdir
  return runs


def train_day_by_day(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs `day_configs`, each in `<workdir>/day<T>/` (finished days are read back, not rerun).

  results.json holds every day's results under 'day<T>/' ('day5/test/scene0/cvr/auc') and the
  last day's again without the prefix; metrics_over_days.png plots test AUC per day.
  """
  logdir = parallel.log_dir(workdir)      # as in train_and_evaluate
  os.makedirs(logdir, exist_ok=True)
  with open(os.path.join(logdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  results, days = {}, []
  for day, day_workdir, day_config in day_configs(config, workdir):
    finished = os.path.join(parallel.log_dir(day_workdir), "results.json")
    if os.path.exists(finished):
      with open(finished) as f:
        day_results = json.load(f)
      print(f"Day {day}: finished earlier, results read from {finished}.")
    else:
      day_results = train_and_evaluate(day_config, day_workdir)
    results.update({f"day{day}/{k}": v for k, v in day_results.items()})
    days.append(day)
  results.update(day_results)
  write_atomically(os.path.join(logdir, "results.json"),
                   json.dumps(results, indent=2, sort_keys=True))
  scenes = sorted({k.split("/")[1] for k in day_results if k.startswith("test/")} - {"all"})
  plots.metric_over_days(results, days, scenes + ["all"],
                         os.path.join(logdir, "metrics_over_days.png"))
  return results


# ----------------------------------------------------------------------------------------
# Adding scenes (the paper: "new tasks or scenes could be added easily")
# ----------------------------------------------------------------------------------------
def added_scenes_config(config: ml_collections.ConfigDict, base: str, base_scenes
                        ) -> ml_collections.ConfigDict:
  """The run on every scene of config.data, warm-started from the run in `base` (trained
  on the scenes named `base_scenes`): their components copied by scene name, frozen in the
  embedding phase, which so trains the new scenes' components alone; a fresh ranking
  network then fine-tuned on every scene."""
  added = config.to_dict()
  del added["add_scene"]
  added.update(init_from=base, init_load=("embedding",), init_new_scenes=True)
  added["phases"]["embedding"]["frozen_scenes"] = tuple(base_scenes)
  return ml_collections.ConfigDict(added)


def train_with_added_scenes(config: ml_collections.ConfigDict, workdir: str
                            ) -> dict[str, float]:
  """config.add_scene.base: a trained run lacking some scenes of config.data; '' trains one
  first in `<workdir>/base`, on the scenes config.add_scene.base_scenes (indices). Then
  `added_scenes_config` runs in `<workdir>/added`. results.json: the added run's results,
  and the base run's under 'base/' when it was trained here."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  results, base = {}, config.add_scene.base
  if not base:
    base = os.path.join(workdir, "base")
    base_config = ml_collections.ConfigDict(config.to_dict())
    del base_config["add_scene"]
    base_config.data.scenes = tuple(config.add_scene.base_scenes)
    results.update({f"base/{k}": v for k, v in train_and_evaluate(base_config, base).items()})
  schema_path = os.path.join(base, "feature_schema.json")
  if not os.path.exists(schema_path):
    raise UserError(f"config.add_scene.base={base!r}: not a trained run's folder (no "
                    "feature_schema.json)")
  with open(schema_path) as f:
    base_scenes = json.load(f)["scenes"]
  results.update(train_and_evaluate(added_scenes_config(config, base, base_scenes),
                                    os.path.join(workdir, "added")))
  write_atomically(os.path.join(workdir, "results.json"),
                   json.dumps(results, indent=2, sort_keys=True))
  return results
