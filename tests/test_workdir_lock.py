"""One run per workdir (issue 20, case 5), and a workdir that cannot be written (case 8)."""

import os
import pathlib
import subprocess
import sys

import pytest

from experiments import common
from mtms_jax import rundir, runs
from mtms_jax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]
# A process that holds a workdir's lock until its stdin closes.
HOLDER = ("import sys; from mtms_jax import rundir\n"
          "with rundir.locked(sys.argv[1]):\n"
          "  print('held', flush=True); sys.stdin.read()\n")


def test_a_second_run_on_a_workdir_in_use_is_one_line_naming_the_holder(tmp_path):
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline() == "held\n"
    second = subprocess.run([sys.executable, "-m", "mtms_jax.main", "--config",
                             "experiments/quickstart.py:smoke", "--workdir", str(tmp_path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  finally:
    holder.communicate("", timeout=60)
  assert second.returncode == 2, second.stderr[-2000:]
  assert second.stderr.strip().splitlines() == [
      f"error: --workdir {tmp_path} is in use by another run (process {holder.pid} on "
      f"{os.uname().nodename}, which holds {tmp_path / rundir.LOCK}); wait for it to end or "
      "use another --workdir"]
  assert sorted(os.listdir(tmp_path)) == []          # nothing written, the lock released


def test_a_lock_left_by_a_dead_process_is_taken_over_and_released(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True).stdout.split()[0]
  (tmp_path / rundir.LOCK).write_text(f"{dead} somehost\n")      # SIGKILLed while running
  with rundir.locked(str(tmp_path)):
    assert (tmp_path / rundir.LOCK).read_text().split()[0] == str(os.getpid())
    with rundir.locked(str(tmp_path)):              # a run kind's nested call: held on
      pass
    assert (tmp_path / rundir.LOCK).exists()
  assert not (tmp_path / rundir.LOCK).exists()


def test_a_new_workdir_is_not_left_behind_empty(tmp_path):
  with pytest.raises(UserError, match="in the data"):
    with rundir.locked(str(tmp_path / "new")):
      raise UserError("a mistake in the data")
  assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("case", ["a file", "inside a file", "not permitted"])
def test_a_workdir_that_cannot_be_written_fails_before_any_data_is_read(tmp_path, case):
  (tmp_path / "file").write_text("")
  workdir = {"a file": tmp_path / "file", "inside a file": tmp_path / "file" / "run",
             "not permitted": pathlib.Path("/sys/mtms_jax_test_workdir")}[case]
  if case == "not permitted" and not pathlib.Path("/sys").is_dir():
    pytest.skip("no /sys")
  config = common.base_config("smoke")
  config.data.name = "no_such_data_set"            # reading any data would fail otherwise
  with pytest.raises(UserError, match=rf"^--workdir {workdir}: cannot write there \("):
    runs.run(config, str(workdir))
