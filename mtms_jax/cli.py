"""The command lines' own mistakes as one line and exit 2, for `python -m mtms_jax.main` and
`python -m mtms_jax.runs.sweep` alike (both define the flags `--config` and `--workdir`):
a config file that does not exist, a `--config.key` the config lacks, a value of the wrong
type (`--config.seed=abc`), a missing `--workdir`.
"""

import os
import re
import sys

from absl import flags
from ml_collections import config_flags

from mtms_jax import errors


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
  text = str(error.args[0].args[0] if error.args and error.args[0].args else error)
  key = re.match(r"'([^']+)'", text)
  overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")
               and key and key[1] in a.split("=")[0].split(".")]
  if not overrides:
    raise error
  hint = re.search(r'Did you mean "[^"]+" instead of "[^"]+"\?', text)
  return (f"{overrides[0]}: the config has no key {key[1]!r}"
          + (f" ({hint[0][0].lower()}{hint[0][1:]})" if hint else ""))


def exit_user_error(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(errors.EXIT_USER_ERROR)
