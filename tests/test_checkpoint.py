"""Checkpoints: exact resume after SIGKILL/SIGTERM/SIGINT, corrupt fallback, NaN stop, keeping.

The smoke run has 18 steps: per day (0, 1, 2) 3 embedding steps then 3 ranking steps, so the
embedding phase owns steps 1-3, 7-9, 13-15 and the ranking phase 4-6, 10-12, 16-18. It saves
at steps 4, 8, 12, 16 and 18, keeping the last two and the best by val/all/ctcvr/auc.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import common
from mtms_jax import checkpoint, optim
from mtms_jax.train import loop, trainer
from mtms_jax.train import progress as progress_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
# Reading a checkpoint back without a target tree: orbax then warns it takes the saved sharding.
pytestmark = pytest.mark.filterwarnings("ignore:Sharding info not provided")
CLI = [sys.executable, "-m", "mtms_jax.main", "--config", "experiments/quickstart.py:smoke"]


def _cli(workdir, signal_at=None):
  env = dict(os.environ)
  env.pop(loop.TEST_SIGNAL_ENV, None)
  if signal_at:
    env[loop.TEST_SIGNAL_ENV] = signal_at
  return subprocess.run(CLI + ["--workdir", str(workdir)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def _final_params(workdir):
  state_dir = os.path.join(workdir, checkpoint.CHECKPOINTS, "18", checkpoint.STATE)
  params = ocp.PyTreeCheckpointer().restore(os.path.abspath(state_dir))["params"]
  return jax.tree.map(np.asarray, params)


def _assert_same_run(workdir, reference):
  """Bitwise: final parameters, results.json and metrics.jsonl."""
  for name in ("results.json", "metrics.jsonl"):
    assert (workdir / name).read_text() == (reference / name).read_text(), name
  np.testing.assert_equal(_final_params(workdir), _final_params(reference))


def test_killed_or_stopped_anywhere_ends_as_an_uninterrupted_run(smoke_run, tmp_path):
  # SIGKILL inside the ranking phase (resumes from step 4) ...
  assert _cli(tmp_path, "5:KILL").returncode == -signal.SIGKILL
  # ... SIGTERM inside the embedding phase: saves step 9, exits 143 saying how to resume ...
  stopped = _cli(tmp_path, "9:TERM")
  assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
  assert "stopped by SIGTERM at step 9" in stopped.stderr
  assert "Resume with:" in stopped.stderr and "--workdir" in stopped.stderr
  # ... SIGKILL inside the embedding phase right after step 12's async save started ...
  assert _cli(tmp_path, "13:KILL").returncode == -signal.SIGKILL
  # ... then the same command finishes the run, as the uninterrupted (in-process) smoke run.
  finished = _cli(tmp_path)
  assert finished.returncode == 0, finished.stderr[-2000:]
  assert "Resuming" in finished.stdout
  _assert_same_run(tmp_path, smoke_run)
  # 12, or 9 when the kill at 13 came before step 12's save completed.
  assert json.loads((tmp_path / "run.json").read_text())["resumed_from_step"] in (9, 12)


def test_sigint_in_process_saves_and_resumes_exactly(smoke_run, tmp_path, monkeypatch):
  handler = signal.getsignal(signal.SIGINT)
  monkeypatch.setenv(loop.TEST_SIGNAL_ENV, "11:INT")
  with pytest.raises(loop.Interrupted, match="SIGINT at step 11"):
    trainer.train_and_evaluate(common.base_config("smoke"), str(tmp_path))
  assert 11 in ocp.CheckpointManager(tmp_path / checkpoint.CHECKPOINTS).all_steps()
  assert signal.getsignal(signal.SIGINT) is handler                  # handlers restored
  monkeypatch.delenv(loop.TEST_SIGNAL_ENV)
  trainer.train_and_evaluate(common.base_config("smoke"), str(tmp_path))
  assert json.loads((tmp_path / "run.json").read_text())["resumed_from_step"] == 11
  _assert_same_run(tmp_path, smoke_run)


def test_checkpoint_holds_the_run_and_keeps_latest_and_best(smoke_run):
  manager = ocp.CheckpointManager(smoke_run / checkpoint.CHECKPOINTS)
  val = {x["step"]: x["val/all/ctcvr/auc"]
         for x in map(json.loads, (smoke_run / "metrics.jsonl").read_text().splitlines())
         if x["phase"] == "val"}
  assert sorted(val) == [4, 8, 12, 16, 18]
  best = max(val, key=val.get)
  assert set(manager.all_steps()) == {16, 18, best}
  assert json.loads((smoke_run / "run.json").read_text())["best_checkpoint_step"] == best
  items = manager.restore(16, args=ocp.args.Composite(**{
      k: ocp.args.JsonRestore() for k in (checkpoint.PROGRESS, checkpoint.CONFIG,
                                          checkpoint.SCHEMA)}))
  progress = items[checkpoint.PROGRESS]
  assert (progress["day"], progress["phase"], progress["segment"]) == (2, "ranking", 5)
  # The typed record reads and writes exactly the keys the item holds.
  assert progress_lib.Progress.from_json(progress).to_json() == progress
  assert items[checkpoint.CONFIG] == json.loads((smoke_run / "config.json").read_text())
  assert items[checkpoint.SCHEMA] == json.loads(
      (smoke_run / "feature_schema.json").read_text())
  data = json.loads((smoke_run / "checkpoints/16/data/process_0-of-1.json").read_text())
  assert data == {"next_index": 1}                  # the ranking segment of day 2: 1 batch in


# Reading the damaged blob leaves an orbax callback for an event loop already closed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(smoke_run, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(smoke_run, run)
  (run / "results.json").unlink()
  for blob in (run / "checkpoints/18/state/d").iterdir():
    blob.write_bytes(blob.read_bytes()[:10])          # a damaged write of the latest save
  with pytest.warns(RuntimeWarning, match="checkpoint at step 18 is unreadable"):
    trainer.train_and_evaluate(common.base_config("smoke"), str(run))
  assert (run / checkpoint.CORRUPT / "18").is_dir()   # set aside, not deleted
  assert json.loads((run / "run.json").read_text())["resumed_from_step"] == 16
  assert {16, 18} <= set(ocp.CheckpointManager(run / checkpoint.CHECKPOINTS).all_steps())
  _assert_same_run(run, smoke_run)


def test_resuming_with_another_config_is_a_clear_error(smoke_run, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(smoke_run, run)
  config = common.base_config("smoke")
  config.model.aggregation = "mean"
  with pytest.raises(ValueError, match=r"different config \(model.aggregation: 'concat' -> "
                                       r"'mean'\)"):
    trainer.train_and_evaluate(config, str(run))
  assert not (run / checkpoint.CORRUPT).exists()     # a mismatch is not taken for corruption


def test_unknown_best_metric_fails_before_training(tmp_path):
  config = common.base_config("smoke")
  config.checkpoint.best_metric = "val/all/ctcvr/acu"
  with pytest.raises(ValueError, match=r"best_metric='val/all/ctcvr/acu' is not a validation "
                                       r"metric; expected one of \['val/all/ctcvr/auc'"):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "metrics.jsonl").exists()


def test_nan_loss_stops_naming_step_and_phase_and_keeps_good_checkpoint(tmp_path, monkeypatch):
  # A NaN learning rate is a config mistake (optim.check_config); let it through here, as
  # the quickest way to make the ranking params NaN after step 4.
  monkeypatch.setattr(optim, "check_config", lambda *args, **kwargs: None)
  config = common.base_config("smoke")
  config.phases.ranking.optimizer.learning_rate = float("nan")
  config.log_every = 100
  config.checkpoint.every_steps = 3
  with pytest.raises(FloatingPointError, match=r"loss \{'loss': nan\} at step 5, phase "
                                               r"'ranking', day 0"):
    trainer.train_and_evaluate(config, str(tmp_path))
  manager = ocp.CheckpointManager(tmp_path / checkpoint.CHECKPOINTS)
  assert manager.all_steps() == [3]
  params = ocp.PyTreeCheckpointer().restore(
      os.path.abspath(tmp_path / "checkpoints/3/state"))["params"]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
