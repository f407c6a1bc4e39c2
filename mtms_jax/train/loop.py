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
import time
from collections.abc import Callable
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from mtms_jax import checkpoint
from mtms_jax.train import early_stopping
from mtms_jax import rundir
from mtms_jax.train import schedule
from mtms_jax.train import train_state


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
  config: ml_collections.ConfigDict
  workdir: str
  schedule: list[schedule.Segment]
  update_fns: dict
  make_iterator: Callable[[int], grain.DatasetIterator]   # segment index -> its batches
  checkpoints: checkpoint.Checkpoints
  writer: rundir.RunWriter
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
          stopper: early_stopping.EarlyStopping | None = None):
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

  def start_segment(self, segment: schedule.Segment, state) -> early_stopping.EarlyStopping | None:
    """A fresh EarlyStopping for `segment`, its first candidate the parameters it starts
    from (scored, not logged: a resumed run could not log it at the same place)."""
    if not segment.eval_every:
      return None
    stopper = early_stopping.EarlyStopping.from_config(self.config.phases[segment.phase])
    score, _ = self.score_phase(segment.phase, state["params"])
    stopper.update(score, 0, self.trained_params(segment.phase, state["params"]))
    return stopper

  def evaluate(self, state, step: int, start: int, segment: schedule.Segment) -> bool:
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

  def log(self, step: int, segment: schedule.Segment, measurements: dict, progress):
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
    self.checkpoints.save(step, train_state.without_scratch(state), batches, progress,
                          self.identity["config"], self.identity["schema"], metrics=ranked,
                          best=best)
