"""Checkpoints checked on restore: SHA-256 sums of their files, finite arrays (issue 20, 1).

The smoke run (conftest.smoke_run) keeps checkpoints 16 and 18 (and its best); a copy of
it without results.json resumes from its latest whole checkpoint.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import common
from mtms_jax import checkpoint, digests
from mtms_jax.train import loop, trainer

REPO = pathlib.Path(__file__).resolve().parents[1]


def _resumable_copy(smoke_run, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(smoke_run, run)
  (run / "results.json").unlink()
  return run


def _assert_same_results(run, reference):
  """Resumed from a good checkpoint, the run ends as the uninterrupted one (bitwise on CPU)."""
  for name in ("results.json", "metrics.jsonl"):
    assert (run / name).read_text() == (reference / name).read_text(), name


def _largest_state_file(run, step):
  files = [p for p in (run / checkpoint.CHECKPOINTS / str(step) / checkpoint.STATE).rglob("*")
           if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


def _overwrite_middle(path, data: bytes):
  content = bytearray(path.read_bytes())
  middle = len(content) // 2
  content[middle:middle + len(data)] = data
  path.write_bytes(bytes(content))


def test_every_checkpoint_has_the_sums_of_its_files(smoke_run):
  steps = sorted(int(p.name) for p in (smoke_run / checkpoint.CHECKPOINTS).iterdir()
                 if p.name.isdigit())
  for step in steps:
    folder = smoke_run / checkpoint.CHECKPOINTS / str(step)
    sums = json.loads((folder / digests.SUMS).read_text())
    assert any(name.startswith(checkpoint.STATE + os.sep) for name in sums)
    assert digests.check_sums(str(folder))               # unchanged since the save


def test_a_checkpoint_changed_in_place_is_set_aside_and_the_previous_one_used(
    smoke_run, tmp_path):
  run = _resumable_copy(smoke_run, tmp_path)
  # 16 bytes of the latest checkpoint's parameters overwritten: orbax reads them as good.
  _overwrite_middle(_largest_state_file(run, 18), b"\x7f" * 16)
  with pytest.warns(RuntimeWarning, match=r"checkpoint at step 18 is unreadable \(ValueError: "
                                          r"state/.* does not match its SHA-256"):
    trainer.train_and_evaluate(common.base_config("smoke"), str(run))
  assert (run / checkpoint.CORRUPT / "18").is_dir()
  assert json.loads((run / "run.json").read_text())["resumed_from_step"] == 16
  _assert_same_results(run, smoke_run)


def _with_nan_parameter(state_dir):
  """Rewrites the train state in `state_dir` with one parameter leaf NaN (orbax itself
  writes it: a checkpoint that reads back fine, as a damaged old one without sums would)."""
  state = ocp.PyTreeCheckpointer().restore(os.path.abspath(state_dir))
  leaf = next(iter(jax.tree_util.tree_leaves_with_path(state["params"])))[0]
  state = jax.tree_util.tree_map_with_path(
      lambda path, x: np.full_like(x, np.nan) if path[1:] == leaf else x, state)
  shutil.rmtree(state_dir)
  with ocp.StandardCheckpointer() as checkpointer:       # saves asynchronously: waits at exit
    checkpointer.save(os.path.abspath(state_dir), state)


@pytest.mark.filterwarnings("ignore:Sharding info not provided")
def test_a_checkpoint_without_sums_restores_unless_it_holds_nan(smoke_run, tmp_path):
  run = _resumable_copy(smoke_run, tmp_path)
  for step in (16, 18):                   # as written before checkpoints had sums
    (run / checkpoint.CHECKPOINTS / str(step) / digests.SUMS).unlink(missing_ok=True)
  _with_nan_parameter(run / checkpoint.CHECKPOINTS / "18" / checkpoint.STATE)
  with pytest.warns(RuntimeWarning, match=r"checkpoint at step 18 is unreadable \(Floating"
                                          r"PointError: non-finite values in state/params/"):
    trainer.train_and_evaluate(common.base_config("smoke"), str(run))
  assert json.loads((run / "run.json").read_text())["resumed_from_step"] == 16
  _assert_same_results(run, smoke_run)


# The command with a full disk injected where a save writes its last file, at step 12.
FULL_DISK_AT_12 = """import errno, os
from mtms_jax import digests, main
write_sums = digests.write_sums
def full_at_12(folder):
  if os.path.basename(folder).startswith("12."):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(folder, digests.SUMS))
  write_sums(folder)
digests.write_sums = full_at_12
main.app.run(main.main)
"""


def _command(workdir, *python):
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  env.pop(loop.TEST_SIGNAL_ENV, None)
  return subprocess.run([sys.executable, *python, "--config", "experiments/quickstart.py:smoke",
                         "--workdir", str(workdir)], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


# A line of absl's log format (`W1203 21:30:00.123456 4242 file.cc:65] ...`, or with
# `0000 00:00:<seconds>` before absl is set up): XLA's and the libraries' own logs, which a
# loaded machine can add to a training run's stderr (XLA's slow-operation alarms), not the
# program's messages.
LIBRARY_LOG = re.compile(r"[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] ")


def _messages(stderr: str) -> list[str]:
  """The program's lines of stderr: without the progress bar's and the libraries' logs."""
  return [line for line in re.split(r"[\r\n]", stderr)
          if line.strip() and not re.search(r"\d+/\d+ \[", line)
          and not LIBRARY_LOG.match(line)]


def _the_one_message(stderr: str) -> str:
  messages = _messages(stderr)
  assert len(messages) == 1, "\n".join(["expected one line on stderr, got:", *messages])
  return messages[0]


def test_a_full_disk_is_one_line_and_the_rerun_resumes(smoke_run, tmp_path):
  full = _command(tmp_path, "-c", FULL_DISK_AT_12)
  assert full.returncode == 2, full.stderr[-3000:]
  message = _the_one_message(full.stderr)
  assert re.fullmatch(rf"error: no space left on the disk of {tmp_path / 'checkpoints'} to save "
                      r"a checkpoint: [\d.]+ MiB free, a checkpoint needs about [\d.]+ MiB\. The "
                      r"checkpoints before it are kept \(steps \[4, 8\]\): free some space and "
                      r"rerun the same command", message)
  trainer.train_and_evaluate(common.base_config("smoke"), str(tmp_path))     # space freed
  assert json.loads((tmp_path / "run.json").read_text())["resumed_from_step"] == 8
  _assert_same_results(tmp_path, smoke_run)


# Reads that fail beside the one orbax raises: tasks whose errors nobody awaits, collected
# by the garbage collector when it happens to run (on a slow machine: during the resume).
ABANDONED_READS = """import asyncio, gc, logging, sys
from mtms_jax import orbax_errors
logging.basicConfig()
if sys.argv[1] == "dropped":
  orbax_errors.drop_abandoned_reads()
async def read():
  raise ValueError("OUT_OF_RANGE: Error reading byte range")
loop = asyncio.new_event_loop()
reads = [loop.create_task(read()) for _ in range(3)]
loop.run_until_complete(asyncio.sleep(0))
loop.close()
del reads
gc.collect()
"""


@pytest.mark.parametrize("dropped", [True, False])
def test_the_errors_of_abandoned_reads_stay_off_stderr(dropped):
  run = subprocess.run([sys.executable, "-c", ABANDONED_READS, "dropped" if dropped else "kept"],
                       cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=60)
  assert run.returncode == 0, run.stderr
  never_retrieved = run.stderr.count("Task exception was never retrieved")
  assert never_retrieved == (0 if dropped else 3), run.stderr


def test_the_warning_of_an_unreadable_checkpoint_is_the_one_line_on_stderr(smoke_run, tmp_path):
  run = _resumable_copy(smoke_run, tmp_path)
  (run / checkpoint.CHECKPOINTS / "18" / digests.SUMS).unlink(missing_ok=True)   # an old one
  for blob in (run / "checkpoints/18/state/d").iterdir():
    blob.write_bytes(blob.read_bytes()[:10])
  resumed = _command(run, "-m", "mtms_jax.main")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  warning = _the_one_message(resumed.stderr)
  assert warning.startswith("warning: checkpoint at step 18 is unreadable (ValueError: ")
  assert warning.endswith(f"moved it to {run / checkpoint.CORRUPT / '18'} and falling back to "
                          "the previous checkpoint")
  assert json.loads((run / "run.json").read_text())["resumed_from_step"] == 16
