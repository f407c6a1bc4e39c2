"""Command line: `python -m mtms_jax.main --config experiments/NAME.py --workdir DIR
[--config.key=value ...]`. The config is locked: overriding a key it lacks is an error.

Rerunning the same command resumes from DIR's latest checkpoint. SIGTERM or SIGINT (Ctrl-C)
saves a checkpoint and exits with status 128 + the signal number (143, 130), so schedulers
that restart failed jobs restart it; the message says how to resume. A config with a
`compare` section (experiments/table1.py) runs a multi-model comparison (compare.py), one
with a `quality` section too (experiments/quality.py) the quality benchmark (quality.py), one
with a `replay` section too (experiments/replay.py) an auction replay (replay.py).
A mistake the user can fix (`errors.UserError`: a config value, checked by
`config_checks.check` before any data is loaded; a data file, a schema file and the logs it
names, checked before training), and a full disk wherever it is met (`cli.one_line_errors`),
is printed as one line and exits with status 2; `--verbosity=1` shows its traceback too. So
are the command line's own mistakes, caught by `cli.parse_flags` before anything runs: a
config file that does not exist, a `--config.key` the config lacks, a value of the wrong
type (`--config.seed=abc`), a missing `--workdir`.
"""

import shlex
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mtms_jax import cli, config_checks, errors, orbax_errors, parallel, runs
from mtms_jax.data import logs
from mtms_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: config, metrics, results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # orbax logs every save at INFO; keep the console to the progress bar unless -v is given.
    logging.set_verbosity(logging.WARNING)
    orbax_errors.drop_logged_errors()
  errors.one_line_notices()
  try:
    with cli.one_line_errors():
      config = _CONFIG.value
      config_checks.check(config)
      logs.configure(config)
      parallel.initialize(config)
      runs.run(config, _WORKDIR.value)
  except loop.Interrupted as e:
    command = shlex.join([sys.executable, "-m", "mtms_jax.main"] + sys.argv[1:])
    print(f"\n{e}\nResume with:\n  {command}", file=sys.stderr)
    sys.exit(128 + e.signum)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
