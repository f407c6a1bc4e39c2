"""A run's folder: the names of its files, atomic writes, the one "finished" rule, and the
metric writers.

Every file a run writes goes through this module, into `path(workdir, name)`: the workdir
itself for process 0 of a multi-process run, `process<i>/` in it for the others
(`parallel.log_dir`), so that processes never write one file. Each file is written whole
and atomically (`replacing`: a temporary file renamed over the old one), so a kill leaves
the old file or the new one, never half of one. Two grow instead: metrics.jsonl, a line a
write (a line cut by a kill is dropped on resume, `rewind_log`), and TensorBoard's event
files. Checkpoints are orbax's, in checkpoints/ (checkpoint.py).

What a run reads back of its own writing it reads from `path` too; a folder the user names
(a base run to add scenes to, a run to export) is read at its top, process 0's copy.

One run per workdir: a run kind holds `locked(workdir)` while it runs (runs/__init__.py),
an exclusive lock on its run.lock (each process of a multi-process run on its own, in its
`path`), which names the holder's PID for a second run that finds it held.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
from collections.abc import Sequence

import ml_collections
import numpy as np
from tensorboardX import FileWriter
from tensorboardX.proto.summary_pb2 import Summary

from mtms_jax import errors, parallel
from mtms_jax.data import fingerprint
from mtms_jax.errors import UserError

# A training run (train/trainer.py), in the order it writes them.
CONFIG = "config.json"                  # the config (every kind writes its own first)
SCHEMA = "feature_schema.json"          # the data's feature schema
DATA_FINGERPRINT = "data_fingerprint.json"   # what identifies the data (data/fingerprint.py)
METRICS = "metrics.jsonl"               # a line a logged step: train, val, early stopping, eval
TENSORBOARD = "tensorboard"             # the same scalars, as TensorBoard events
PREDICTIONS = "test_predictions.npz"    # test-day predictions, for a comparison's tests
LOCK = "run.lock"                       # held while a run runs here: its PID and host
RUN_INFO = "run.json"                   # wall-clock seconds, where it resumed or warm-started
RESULTS = "results.json"                # the flat results, written last (`finished_results`)
# A day-by-day run (runs/daily.py), beside its days' runs in day<T>/.
METRICS_OVER_DAYS = "metrics_over_days.png"
# A comparison (runs/compare.py, report/tables.py), beside its runs in <row>/seed<k>/.
TABLE_MD, TABLE_CSV, TABLE_PNG = "table.md", "table.csv", "table.png"
COMPILATION_CACHE = "jax_cache"         # the programs its runs share, compiled once
# The quality benchmark (runs/quality.py), beside its comparison and epochs/<row>/<epochs>/.
QUALITY_MD, QUALITY_JSON = "quality.md", "quality.json"
# An auction replay (runs/replay.py), beside its comparison.
REPLAY_MD, REPLAY_JSON = "replay.md", "replay.json"
# A sweep (runs/sweep.py), beside its points' runs in <point>/.
SWEEP_CSV, SWEEP_MD, SWEEP_PNG = "sweep.csv", "sweep.md", "sweep.png"


# Config keys that say what a run may do, not what it is, and the sections of the kinds that
# run comparisons (runs.MANY_RUNS but compare) that say what they do with a comparison's runs
# (which keep them in their configs), not how those train: left out when runs are compared.
# So a rerun of `quality` with other curve_epochs reuses the comparison's finished runs.
OVERRIDES = ("allow_other_data", "quality", "replay")
_HELD: set[str] = set()         # the locks this process holds (a run kind's nested calls)


@contextlib.contextmanager
def locked(workdir: str):
  """Holds the lock of `workdir` (made if missing) for the block: one run per workdir.

  The lock is the kernel's (flock): it goes with the process that holds it, also when that
  process is killed, so a run.lock left by a dead run is taken over. Held by this process
  already (a run kind calling another on the same workdir), it is held on.

  Raises:
    UserError: another process holds it (naming its PID), or `workdir` cannot be written
      (a file in its place, no permission, a read-only or full disk).
  """
  target = os.path.realpath(path(workdir, LOCK))
  if target in _HELD:
    yield
    return
  made = not os.path.exists(workdir)
  fd = _take_lock(target, workdir)
  _HELD.add(target)
  try:
    yield
  finally:
    _HELD.discard(target)
    with contextlib.suppress(FileNotFoundError):
      os.remove(target)      # before the unlock: a run that takes it next makes a new one
    os.close(fd)
    if made and not os.listdir(workdir):
      os.rmdir(workdir)      # nothing was written: leave no empty folder behind


def _take_lock(target: str, workdir: str) -> int:
  """An open descriptor of `target`, locked by this process, holding its PID and host."""
  while True:
    try:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise UserError(f"--workdir {workdir}: cannot write there ({e.strerror}: "
                      f"{e.filename})") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 200, 0).decode(errors="replace").split()
      os.close(fd)
      raise UserError(f"--workdir {workdir} is in use by another run (process "
                      f"{' on '.join(holder) or '?'}, which holds {target}); wait for it to "
                      "end or use another --workdir") from None
    # Its holder may have removed it between our open and lock: then lock the new file.
    if os.path.exists(target) and os.path.samestat(os.fstat(fd), os.stat(target)):
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
      return fd
    os.close(fd)


def path(workdir: str, name: str) -> str:
  """Where this process writes (and reads back) the file `name` of the run in `workdir`."""
  return os.path.join(parallel.log_dir(workdir), name)


@contextlib.contextmanager
def replacing(target: str, mode: str = "w"):
  """A file object ('w': text, 'wb': bytes) whose contents replace `target` in one step
  when the block ends without an error; on an error `target` stays as it was."""
  os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
  temporary = target + ".tmp"
  try:
    # newline="": text as given ('\n'; the csv module's own '\r\n').
    with (errors.naming_file(temporary),
          open(temporary, mode, **({} if "b" in mode else {"newline": ""})) as f):
      yield f
    os.replace(temporary, target)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def write_atomically(target: str, text: str):
  with replacing(target) as f:
    f.write(text)


def save_npz(target: str, **arrays: np.ndarray):
  with replacing(target, "wb") as f:
    np.savez(f, **arrays)


def write_text(workdir: str, name: str, text: str):
  write_atomically(path(workdir, name), text)


def write_json(workdir: str, name: str, content, sort_keys: bool = True):
  write_text(workdir, name, json.dumps(content, indent=2, sort_keys=sort_keys))


def write_config(workdir: str, config: ml_collections.ConfigDict):
  write_text(workdir, CONFIG, config.to_json_best_effort(indent=2))


def read_json(workdir: str, name: str):
  with open(path(workdir, name)) as f:
    return json.load(f)


def finished_results(workdir: str, config: ml_collections.ConfigDict,
                     needs: Sequence[str] = ()) -> dict | None:
  """The results of the run of `config` in `workdir` if it has finished, else None.

  The one rule of the kinds that reuse runs (a comparison's runs, a sweep's points, the
  days of a day-by-day run): a run has finished when its results.json is there, which
  every run writes last, after training, with the other files the caller reads (`needs`,
  e.g. a comparison's test predictions). A folder that holds a run of another config (its
  config.json) is an error: reusing or resuming it would mix two experiments. So is a
  finished run trained on other data than config.data's (its data_fingerprint.json, as a
  resume checks it: `fingerprint.check`), unless config.allow_other_data.
  """
  current = comparable(json.loads(config.to_json_best_effort()))
  if os.path.exists(path(workdir, CONFIG)) and comparable(read_json(workdir, CONFIG)) != current:
    raise UserError(f"{workdir} holds a run of a different config; remove it or use another "
                    "--workdir")
  if not all(os.path.exists(path(workdir, name)) for name in (RESULTS, *needs)):
    return None
  fingerprint.check(path(workdir, DATA_FINGERPRINT), fingerprint.of_config(config.data),
                    bool(config.get("allow_other_data")), "Reusing")
  return read_json(workdir, RESULTS)


def comparable(config_json: dict) -> dict:
  """A config (as JSON) without its OVERRIDES: what two runs must share to be one run."""
  return {k: v for k, v in config_json.items() if k not in OVERRIDES}


class RunWriter:
  """metrics.jsonl and TensorBoard events of the run in `workdir`.

  A resumed run first drops the lines written after the step it resumes from, so that
  metrics.jsonl reads as one uninterrupted run (TensorBoard keeps both copies).
  """

  def __init__(self, workdir: str, resume_step: int):
    metrics = path(workdir, METRICS)
    rewind_log(metrics, resume_step)
    os.makedirs(os.path.dirname(metrics), exist_ok=True)
    self.jsonl = open(metrics, "a")
    self.tb = FileWriter(path(workdir, TENSORBOARD))

  def write(self, step: int, scalars: dict, **info):
    with errors.naming_file(self.jsonl.name):
      self.jsonl.write(json.dumps({"step": step, **info, **scalars}) + "\n")
      self.jsonl.flush()
    # One event for every scalar of the call: an event a scalar cost 0.1 ms each, 1.7 s of
    # a 100-scene run's 14 s (its per-component scores, 200 a validation).
    values = [Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()
              if isinstance(v, (int, float)) and math.isfinite(v)]
    if values:
      self.tb.add_summary(Summary(value=values), step)

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    with errors.naming_file(self.jsonl.name):
      self.jsonl.close()
    self.tb.close()


def rewind_log(log: str, step: int):
  """Keeps the lines of `log` up to `step`, minus final evaluations and lines cut by a kill."""
  if not os.path.exists(log):
    return
  kept = []
  with open(log) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if record["step"] <= step and record.get("phase") != "eval":
        kept.append(line if line.endswith("\n") else line + "\n")
  write_atomically(log, "".join(kept))
