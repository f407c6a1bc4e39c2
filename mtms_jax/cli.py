"""The errors a user can fix as one line and exit 2, for `python -m mtms_jax.main` and
`python -m mtms_jax.runs.sweep` alike (both define the flags `--config` and `--workdir`):
the command line's own mistakes (`parse_flags`: a config file that does not exist, a
`--config.key` the config lacks, a value of the wrong type (`--config.seed=abc`), a missing
`--workdir`), and, while the command runs (`one_line_errors`), a `UserError` and a full disk
wherever it is met (`disk_full_message`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys

from absl import flags
from ml_collections import config_flags

from mtms_jax import errors, orbax_errors


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with the command line's mistakes as one line and exit 2 (absl
  exits 1 after two lines; config_flags raises a traceback for a key the config lacks and
  defers a missing config file to the first read of the config)."""
  try:
    argv = flags.FLAGS(argv)
  except flags.Error as e:
    exit_user_error(str(e))
  except AttributeError as e:
    exit_user_error(unknown_key(e, argv))
  path = config_flags.get_config_filename(flags.FLAGS["config"]).split(":")[0]  # no arg
  if not os.path.isfile(path):
    exit_user_error(f"--config={path!r}: no such file")
  return argv


def unknown_key(error: AttributeError, argv: list[str]) -> str:
  """The message of config_flags' AttributeError for a `--config.key` the config lacks,
  naming the override; `error` itself when it is not one (a bug keeps its traceback)."""
  key, hint = errors.missing_config_key(error) or (None, "")
  overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")
               and key in a.split("=")[0].split(".")]
  if not overrides:
    raise error
  return f"{overrides[0]}: the config has no key {key!r}" + (f" ({hint})" if hint else "")


def exit_user_error(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(errors.EXIT_USER_ERROR)


@contextlib.contextmanager
def one_line_errors():
  """Exits with one line and status 2 on a UserError or a full disk raised in the block;
  with --verbosity given, raises it on (its traceback shown)."""
  try:
    yield
  except Exception as e:
    message = str(e) if isinstance(e, errors.UserError) else disk_full_message(e)
    if message is None or flags.FLAGS["verbosity"].present:
      raise
    exit_user_error(message)


def disk_full_message(error: BaseException) -> str | None:
  """The one line of a full disk that `error`, or an error it came from, reports (an
  OSError ENOSPC, or orbax's and tensorstore's errors that wrap one), naming the file it
  was writing and the space left on that disk; None for any other error.

  A checkpoint's save reports its own full disk (checkpoint.py, with the size it needs).
  Files written before are kept (each is replaced whole or not at all: rundir.replacing).
  """
  if not orbax_errors.disk_full(error):
    return None
  path = _file_written(error)
  if path is None:
    return f"no space left on device ({' '.join(str(error).split())[:300]})"
  return (f"no space left on the disk of {path}: {_free_mib(path):.1f} MiB free; free some "
          "space and rerun the same command (finished runs and checkpoints are kept)")


def _file_written(error: BaseException | None) -> str | None:
  """The file named by `error` or an error it came from: an OSError's, or a path quoted in
  the message (tensorstore's)."""
  while error is not None:
    if isinstance(error, OSError) and error.filename is not None:
      return os.fsdecode(error.filename)
    quoted = re.search(r"""["'](/[^"']+)["']""", str(error))
    if quoted:
      return quoted[1]
    error = error.__cause__ or error.__context__
  return None


def _free_mib(path: str) -> float:
  """The free space, in MiB, of the disk `path` (or its nearest existing folder) lies on."""
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return shutil.disk_usage(path).free / 2**20
