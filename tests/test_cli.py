"""The command lines' own mistakes (issue 20, case 8; mtms_jax/cli.py): one line on stderr,
exit 2, no traceback, no run folder: a config file that does not exist, a key the config
lacks, a value of the wrong type; in the training command and in the sweep's."""

import pathlib
import subprocess
import sys

import pytest

from mtms_jax import errors

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
