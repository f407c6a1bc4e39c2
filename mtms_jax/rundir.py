"""A run folder's files: written atomically, metrics.jsonl and TensorBoard events."""

from __future__ import annotations

import json
import math
import os
from tensorboardX import SummaryWriter


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
