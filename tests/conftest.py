"""Shared fixtures. Tests run on the CPU; nothing here needs an accelerator."""

import atexit
import contextlib
import fcntl
import importlib
import os
import pathlib
import pickle
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


@contextlib.contextmanager
def _locked(path: pathlib.Path):
  with open(path, "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    yield


def trained_once(tmp_path_factory, worker_id: str, name: str, train):
  """`train(workdir)`'s return value, for a run trained once for the whole session: under
  pytest-xdist the first worker to ask trains it into a folder every worker sees (the
  parent of the workers' base temp folders, one per session) while the others wait for it,
  then each reads the folder and the pickled return value. Tests read the folder, never
  write it."""
  if worker_id == "master":         # no xdist: the session's base temp is this process's
    root = tmp_path_factory.getbasetemp()
  else:
    root = tmp_path_factory.getbasetemp().parent
  workdir, returned = root / f"shared_{name}", root / f"shared_{name}.pkl"
  with _locked(root / f"shared_{name}.lock"):
    if not returned.exists():
      shutil.rmtree(workdir, ignore_errors=True)      # a worker's unfinished run
      workdir.mkdir()
      value = train(workdir)
      returned.write_bytes(pickle.dumps(value))
  return pickle.loads(returned.read_bytes())


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, worker_id):
  """A finished run of the quickstart's `smoke` shrink (18 steps, saves at 4, 8, ..., 18)."""
  def train(workdir):
    trainer.train_and_evaluate(common.base_config("smoke"), str(workdir))
    return workdir
  return trained_once(tmp_path_factory, worker_id, "smoke_run", train)


@pytest.fixture(scope="session")
def added_run(tmp_path_factory, worker_id):
  """experiments/add_scene.py on its smoke shrink: base (scene0) and added (both) runs;
  shared by test_add_scene.py and the add_scene case of test_experiments.py (read-only)."""
  def train(workdir):
    config = add_scene_experiment.get_config("smoke")
    return workdir, config, runs.run(config, str(workdir))
  return trained_once(tmp_path_factory, worker_id, "add_scene", train)


@pytest.fixture(scope="session")
def experiment_runs(tmp_path_factory, worker_id):
  """name -> (workdir, results) of experiments/<name>.py on its smoke shrink, trained once a
  session when first asked for: shared (read-only) by the model's tests, the experiment's
  case of test_experiments.py and test_parallel.py's comparison with one device."""
  def run(name):
    def train(workdir):
      config = importlib.import_module(f"experiments.{name}").get_config("smoke")
      return workdir, runs.run(config, str(workdir))
    return trained_once(tmp_path_factory, worker_id, f"{name}_run", train)
  return run
