"""The phase schedule (the paper's alternating update, Sec. III-C) as a list of segments.

For each training day, in order, and for `schedule.rounds_per_day` rounds, each phase in
`schedule.order` runs for its steps (`phases.<name>.steps`, or `phases.<name>.epochs` of that
day's rows, at least `min_steps`), on its share of the day's rows (`phases.<name>.rows`).
The paper's hot start (Sec. IV: embeddings pre-trained on the history, then trained on the
recent days, tested on the next): the first `schedule.history_days` training days run the
phases of `schedule.history_order` instead (e.g. ('embedding',); empty: `order`).
`Batches` makes each segment's iterator of batches.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence

import grain
import ml_collections

from mtms_jax import errors
from mtms_jax.data import Dataset, pipeline
from mtms_jax.errors import UserError


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


def check(schedule: ml_collections.ConfigDict, where: str, num_train_days: int) -> None:
  """The hot start's days and phases (the phases themselves are checked with `order`)."""
  history, order = schedule.get("history_days", 0), tuple(schedule.order)
  # No training days at all is config.train_days's mistake (config_checks.check_days).
  errors.expect(0 <= history < max(num_train_days, 1), f"{where}.history_days", history,
                f">= 0 and fewer than the {num_train_days} training days (config.train_days)")
  history_order = tuple(schedule.get("history_order", ()))
  errors.expect(set(history_order) <= set(order), f"{where}.history_order", history_order,
                f"phases of {where}.order {list(order)} (empty: the same)")


def row_slice(num_rows: int, rows: tuple[float, float]) -> slice:
  return slice(round(num_rows * rows[0]), round(num_rows * rows[1]))


def make_schedule(config: ml_collections.ConfigDict, rows_per_day: dict[int, int]
                  ) -> list[Segment]:
  schedule = []
  history = config.schedule.get("history_days", 0)
  for i, day in enumerate(config.train_days):
    order = config.schedule.order
    if i < history and config.schedule.get("history_order"):
      order = config.schedule.history_order
    for r in range(config.schedule.rounds_per_day):
      for phase in order:
        phase_config = config.phases[phase]
        rows = phase_rows(phase_config, phase)
        s = row_slice(rows_per_day[day], rows)
        num_rows = s.stop - s.start
        schedule.append(Segment(day, r, phase,
                                phase_steps(phase_config, num_rows, config.batch_size),
                                eval_every(phase_config, num_rows, config.batch_size), rows))
  return schedule


@dataclasses.dataclass(frozen=True)
class Batches:
  """The batches of a schedule's segments.

  A segment reads shuffles of its day's rows (its share of them, this process's share of
  each batch), seeded by the day, continuing where the segments of the same rows before it
  were planned to end, so each segment reads its own batches whether or not an earlier one
  stopped early.
  """
  segments: Sequence[Segment]
  days: Mapping[int, Dataset]            # day -> its training rows
  batch_size: int
  seed: int
  share: tuple[int, int]                 # (process index, process count)
  place: Callable[[dict], dict]          # a batch -> on the devices (`parallel.place_batch`)

  def iterator(self, index: int) -> grain.DatasetIterator:
    """A fresh iterator of segment `index`'s batches, at its first."""
    segment = self.segments[index]
    first = sum(s.steps for s in self.segments[:index] if s.source == segment.source)
    data = self.days[segment.day]
    columns = {k: v[row_slice(len(data), segment.rows)] for k, v in data.columns.items()}
    return pipeline.train_iterator(columns, self.batch_size, segment.steps,
                                   seed=self.seed * 100_003 + segment.day, name=data.name,
                                   first_batch=first, share=self.share, place=self.place)


def to_json(segments: Sequence[Segment]) -> list[dict]:
  """The schedule as its checkpoints hold it (the progress item's 'schedule')."""
  return json.loads(json.dumps([dataclasses.asdict(s) for s in segments]))
