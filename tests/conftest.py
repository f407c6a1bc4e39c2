"""Shared fixtures. Tests run on the CPU; nothing here needs an accelerator."""

import atexit
import importlib
import os
import pathlib
import shutil
import tempfile

# Every train_and_evaluate builds its own jitted closures, so tests recompile the same
# programs many times; a compilation cache for the session (subprocesses inherit it through
# the environment) compiles each once. Set before jax is imported, which reads these.
_CACHE = tempfile.mkdtemp(prefix="mtms_jax_test_cache_")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Compiling is most of a smoke run's time: fewer XLA passes for every test, in this process and
# in the command-line runs the tests start (so their results compare with in-process runs).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# scene_route 'auto' caches its measured choices under XDG_CACHE_HOME (models/routes.py):
# tests keep theirs in the session's folder, never in the user's cache.
os.environ["XDG_CACHE_HOME"] = os.path.join(_CACHE, "xdg")

import pytest  # noqa: E402

from experiments import add_scene as add_scene_experiment  # noqa: E402
from experiments import common  # noqa: E402
from mtms_jax import runs  # noqa: E402
from mtms_jax.data import synthetic  # noqa: E402
from mtms_jax.train import trainer  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_data():
  """Two scenes, four days of 3000 rows: enough rows for every slice to hold both labels."""
  return synthetic.load(rows_per_day=3000, num_users=60, num_ads=30, num_user_groups=5,
                        num_ad_groups=5, embedding_dim=4, seed=1)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """A finished run of the quickstart's `smoke` shrink (18 steps, saves at 4, 8, ..., 18)."""
  workdir = tmp_path_factory.mktemp("smoke_run")
  trainer.train_and_evaluate(common.base_config("smoke"), str(workdir))
  return workdir


@pytest.fixture(scope="session")
def added_run(tmp_path_factory):
  """experiments/add_scene.py on its smoke shrink: base (scene0) and added (both) runs;
  shared by test_add_scene.py and the add_scene case of test_experiments.py (read-only)."""
  workdir = tmp_path_factory.mktemp("add_scene")
  config = add_scene_experiment.get_config("smoke")
  return workdir, config, runs.run(config, str(workdir))


@pytest.fixture(scope="session")
def experiment_runs(tmp_path_factory):
  """name -> (workdir, results) of experiments/<name>.py on its smoke shrink, trained once a
  session when first asked for: shared (read-only) by the model's tests, the experiment's
  case of test_experiments.py and test_parallel.py's comparison with one device."""
  trained = {}

  def run(name):
    if name not in trained:
      workdir = tmp_path_factory.mktemp(f"{name}_run")
      config = importlib.import_module(f"experiments.{name}").get_config("smoke")
      trained[name] = workdir, runs.run(config, str(workdir))
    return trained[name]
  return run
