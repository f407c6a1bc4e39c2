"""The command lines' own mistakes (issue 20, case 8; mtms_jax/cli.py): one line on stderr,
exit 2, no traceback, no run folder: a config file that does not exist, a key the config
lacks, a value of the wrong type, a public data set's missing files (issue 20, case 4); in
the training command and in the sweep's."""

import errno
import os
import pathlib
import re
import subprocess
import sys

import pytest

from experiments import sweep_demo
from mtms_jax import cli, errors, rundir
from mtms_jax.data import movielens
from mtms_jax.runs import sweep

REPO = pathlib.Path(__file__).resolve().parents[1]


SEED_TYPO = ("--config.seeed: the config has no key 'seeed' (did you mean \"seed\" instead of "
             "\"seeed\"?)")


@pytest.mark.parametrize("command, config, override, message", [
    ("mtms_jax.main", "experiments/nonexist.py:smoke", [],
     "--config='experiments/nonexist.py': no such file"),
    ("mtms_jax.main", "experiments/quickstart.py:smoke", ["--config.seeed=2"], SEED_TYPO),
    ("mtms_jax.main", "experiments/quickstart.py:smoke", ["--config.seed=abc"],
     "flag --config.seed=abc: invalid literal for int() with base 10: 'abc'"),
    ("mtms_jax.runs.sweep", "experiments/nonexist.py:smoke", [],
     "--config='experiments/nonexist.py': no such file"),
    ("mtms_jax.runs.sweep", "experiments/sweep_demo.py:smoke", ["--config.seeed=2"], SEED_TYPO),
    ("mtms_jax.main", "experiments/quickstart.py:smoke", ["--config.model.name=mmoe"],
     "config.model.num_experts: missing; model 'mmoe' reads it. A model section holds every "
     "field of its model: set the model with its whole section (experiments/common.py "
     "JOINT_MODELS has each joint model's), not config.model.name alone"),
    ("mtms_jax.main", "experiments/table2.py:movielens", ["--config.data.kwargs.path=ml-100k"],
     f"ml-100k ({REPO / 'ml-100k'}): no such file or folder. The MovieLens data are not part "
     f"of this repository; get the public release from {movielens.SOURCE.where}, and give "
     "its path as config.data.kwargs.path"),
])
def test_a_command_line_mistake_is_one_line_and_exit_2(tmp_path, command, config, override,
                                                       message):
  workdir = tmp_path / "run"
  proc = subprocess.run([sys.executable, "-m", command, "--config", config,
                         "--workdir", str(workdir), *override],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == errors.EXIT_USER_ERROR, proc.stderr
  assert proc.stderr.strip().splitlines() == [f"error: {message}"]
  assert not workdir.exists()


# A full disk outside a checkpoint's save (issue 20, case 8): /dev/full, where a write
# fails with ENOSPC as on a full disk, in place of a file the run writes.
def _full_disk_at(path: pathlib.Path):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.symlink_to("/dev/full")


def test_a_full_disk_met_by_a_run_file_names_the_file(tmp_path):
  _full_disk_at(tmp_path / "results.json.tmp")
  with pytest.raises(OSError) as written:
    rundir.write_json(str(tmp_path), rundir.RESULTS, {"test/all/ctr/auc": 0.5})
  assert not (tmp_path / "results.json.tmp").exists()      # nothing half-written left
  assert re.fullmatch(rf"no space left on the disk of {tmp_path / 'results.json.tmp'}: "
                      r"[\d.]+ MiB free; free some space and rerun the same command "
                      r"\(finished runs and checkpoints are kept\)",
                      cli.disk_full_message(written.value))


def test_a_full_disk_met_by_metrics_jsonl_names_it(tmp_path):
  with pytest.raises(OSError) as written, rundir.RunWriter(str(tmp_path), 0) as writer:
    writer.jsonl.close()
    writer.jsonl = open("/dev/full", "a")     # (a link would be read by the resume's rewind)
    writer.write(1, {"loss": 1.0})
  assert cli.disk_full_message(written.value).startswith("no space left on the disk of "
                                                         "/dev/full: ")


def test_a_full_disk_inside_tensorstore_is_recognised_with_its_path():
  try:
    try:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as e:    # tensorstore's own: a ValueError that quotes the path
      raise ValueError('Error writing "/tmp/run/checkpoints/4/state/d/0": '
                       "No space left on device") from e
  except ValueError as e:
    message = cli.disk_full_message(e)
  assert message.startswith("no space left on the disk of /tmp/run/checkpoints/4/state/d/0: ")


@pytest.mark.parametrize("error", [OSError(errno.EACCES, "Permission denied", "/x"),
                                   ValueError("no space in this message")])
def test_other_errors_are_not_a_full_disk(error):
  assert cli.disk_full_message(error) is None


POINTS = sweep.point_names(sweep_demo.get_hyper(sweep))


@pytest.mark.parametrize("command, config, folder", [
    ("mtms_jax.main", "experiments/quickstart.py:smoke", "."),
    ("mtms_jax.runs.sweep", "experiments/sweep_demo.py:smoke", POINTS[0]),   # its first run
])
def test_a_full_disk_in_a_run_is_one_line_and_exit_2(tmp_path, command, config, folder):
  config_file = tmp_path / folder / (rundir.CONFIG + ".tmp")
  _full_disk_at(config_file)
  proc = subprocess.run([sys.executable, "-m", command, "--config", config,
                         "--workdir", str(tmp_path)],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == errors.EXIT_USER_ERROR, proc.stderr[-3000:]
  [message] = [line for line in re.split(r"[\r\n]", proc.stderr)
               if line.strip() and not re.search(r"\d+/\d+ \[", line)]    # no progress bar
  assert message.startswith(f"error: no space left on the disk of {config_file}: ")
  assert not (tmp_path / POINTS[1]).exists()        # a sweep stops at the point that met it
