"""Where a run stands: the typed record a checkpoint holds as its 'progress' JSON item.

`Progress` keeps the keys checkpoints have always held, so checkpoints written before it
was typed resume as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Progress:
  """A checkpoint's place in the run, and what the run carries from session to session."""
  step: int                      # position in the schedule (`loop.Loop`)
  day: int                       # of the segment in progress
  round: int
  phase: str
  segment: int                   # its index in the schedule
  schedule: list[dict]           # the whole schedule as JSON: a resume checks it is the same
  warm_start: dict | None        # where the run warm-started from (`resume.Start`)
  train_seconds: float           # training time so far, over every session
  early_stopping: dict | None    # the segment's stopper's `to_json()`, if it has one

  def to_json(self) -> dict:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  @classmethod
  def from_json(cls, saved: Mapping) -> Progress:
    return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls)})
