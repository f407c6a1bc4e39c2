"""The training loop: runs the schedule from any step, logs, stops phases early, saves.

SIGTERM and SIGINT make the loop save a checkpoint of the step reached and raise
`Interrupted`; a loss or parameter that is not finite stops the run before it is saved.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
from collections.abc import Callable

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from mtms_jax import checkpoint, rundir
from mtms_jax.eval import validation
from mtms_jax.train import early_stopping, resume, schedule

# Tests only: 'STEP:SIGNAL', e.g. '7:KILL' or '12:TERM', makes the loop send itself SIGSIGNAL
# right after update STEP, to prove that a run stopped at any step resumes exactly.
TEST_SIGNAL_ENV = "MTMS_TEST_SIGNAL_AT_STEP"


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


def check_finite(measurements: dict, step: int, segment: schedule.Segment):
  bad = {k: v for k, v in measurements.items() if not math.isfinite(v)}
  if bad:
    raise FloatingPointError(f"non-finite training loss {bad} at step {step}, phase "
                             f"{segment.phase!r}, day {segment.day}; the checkpoints saved "
                             "before it are kept")


def check_losses(pending: list[tuple[int, schedule.Segment, jax.Array]]):
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
  config: ml_collections.ConfigDict          # log_every, checkpoint.every_steps and best_metric
  segments: list[schedule.Segment]
  update_fns: dict[str, Callable]            # phase -> its compiled update
  batches: schedule.Batches
  evaluator: validation.Evaluator            # validation metrics, to rank checkpoints
  stopping: early_stopping.Policy
  saver: resume.Saver
  writer: rundir.RunWriter

  def __post_init__(self):
    self.starts = np.cumsum([0] + [s.steps for s in self.segments]).tolist()
    signal_at = os.environ.get(TEST_SIGNAL_ENV)
    self.signal_at = None
    if signal_at:
      at, name = signal_at.split(":")
      self.signal_at = (int(at), signal.Signals[f"SIG{name}"])

  @property
  def total(self) -> int:
    return self.starts[-1]

  def run(self, start: resume.Start):
    """Trains from `start` to the end of the schedule; returns the final state."""
    state, step, batches, stopper = start.state, start.step, start.batches, start.stopper
    progress = tqdm.tqdm(total=self.total, initial=step, unit="step", dynamic_ncols=True,
                         mininterval=1.0)
    pending = []
    # Closed on any way out, so that an error's message comes after the bar, not inside it.
    with progress, StopSignals() as stop:
      for index, segment in enumerate(self.segments):
        begin, end = self.starts[index], self.starts[index + 1]
        if step >= end:
          continue
        if step == begin:
          batches = self.batches.iterator(index)
          stopper, state = self.stopping.start(segment, state)
        progress.set_description(f"day {segment.day} {segment.phase}")
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
          if stopper and ((step - begin) % segment.eval_every == 0 or step == end):
            state, stops = self.evaluate(stopper, state, step, begin, segment)
            if stops:
              progress.update(end - step)
              step = end
          if step == end and stopper:
            state = stopper.end(state)
            stopper = None
          if self.scheduled_save(step) or stop.signum:
            check_losses(pending)
            pending = []
            self.save(state, step, index, batches, stopper)
          if stop.signum:
            raise Interrupted(stop.signum, step, self.saver.checkpoints.workdir)
          progress.update(1)
    return state

  def evaluate(self, stopper: early_stopping.Stopper,
               state, step: int, begin: int, segment: schedule.Segment) -> tuple[dict, bool]:
    """Scores the segment's model on the validation rows; returns the state the stopper
    leaves (its stopped components back at their best) and whether to stop the segment."""
    score, scalars = self.stopping.score(segment.phase, state["params"])
    self.writer.write(step, scalars, day=segment.day, phase="early_stopping")
    return stopper.evaluated(score, step - begin, state)

  def scheduled_save(self, step: int) -> bool:
    return step % self.config.checkpoint.every_steps == 0 or step == self.total

  def maybe_send_test_signal(self, step: int):
    if self.signal_at and step == self.signal_at[0]:
      os.kill(os.getpid(), self.signal_at[1])

  def log(self, step: int, segment: schedule.Segment, measurements: dict, progress):
    scalars = {f"train/{segment.phase}/{k}": float(v) for k, v in measurements.items()}
    check_finite(scalars, step, segment)
    self.writer.write(step, scalars, day=segment.day, phase=segment.phase)
    progress.set_postfix(loss=f"{scalars[f'train/{segment.phase}/loss']:.4f}")

  def save(self, state, step: int, index: int, batches: grain.DatasetIterator,
           stopper: early_stopping.Stopper | None):
    """Starts an async save of `state` at `step`, ranked by the validation metric."""
    segment = self.segments[index]
    if not bool(all_finite(state["params"])):
      raise FloatingPointError(f"non-finite parameters after step {step}, phase "
                               f"{segment.phase!r}, day {segment.day}; not saved")
    ranked = None
    if self.config.checkpoint.best_metric:
      ranked = self.evaluator.metrics(state["params"])
      # A save on a signal is off the schedule: logging its scores would make the log of a
      # resumed run differ from an uninterrupted one.
      if self.scheduled_save(step):
        self.writer.write(step, ranked, day=segment.day, phase="val")
    self.saver.save(step, index, segment, state, batches, stopper, ranked)
