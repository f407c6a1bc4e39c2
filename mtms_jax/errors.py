"""Errors a user can cause and fix: a config value, a data file, a command-line argument.

`UserError` is a ValueError, so callers and tests that expect ValueError keep working;
`mtms_jax.main` prints it as one line, without a traceback, and exits with status 2. Raise it
for anything the user can correct, and check such things before any training starts, so
that no work is lost to them (`mtms_jax.config_checks` checks the config before any data is
loaded). Bugs stay ordinary exceptions with their tracebacks.

`expect` and `expect_choice` give a config value's message its one shape, `key=value:
expected ...`, so that a value checked both by the config pass and by the module that uses
it (when called without `mtms_jax.main`, e.g. from a test) reads the same either way.
"""

import contextlib
import re
import warnings
from collections.abc import Collection


class UserError(ValueError):
  """A mistake in the user's config, data or command line; the message says how to fix it."""


EXIT_USER_ERROR = 2


class Notice(RuntimeWarning):
  """Something the user should know that does not stop the run (a damaged checkpoint set
  aside); `mtms_jax.main` prints it as one line, `warning: <message>`."""


def expect(ok: bool, key: str, value, expected: str) -> None:
  """Raises UserError `key=value: expected <expected>` unless `ok`.

  Example:
    expect(batch_size > 0, "config.batch_size", batch_size, "> 0")
  """
  if not ok:
    raise UserError(f"{key}={value!r}: expected {expected}")


def expect_choice(key: str, value, choices: Collection) -> None:
  """Raises UserError `key=value: expected one of [...]` unless `value` is in `choices`."""
  expect(value in choices, key, value, f"one of {list(choices)}")


def one_line_notices() -> None:
  """Makes `warnings` print a Notice as `warning: <message>`, one line (the commands)."""
  default = warnings.formatwarning

  def format_notice(message, category, filename, lineno, line=None):
    if issubclass(category, Notice):
      return f"warning: {message}\n"
    return default(message, category, filename, lineno, line)
  warnings.formatwarning = format_notice


@contextlib.contextmanager
def naming_file(path):
  """Gives an OSError of the block that names no file `path`'s name: a full disk met by a
  write or a close names none, and its one-line message (`cli.disk_full_message`) should
  say where it was writing."""
  try:
    yield
  except OSError as e:
    if e.filename is None and e.errno is not None:    # an error of the system, not a message
      e.filename = str(path)
    raise


def missing_config_key(error: Exception) -> tuple[str, str] | None:
  """(key, hint) of the error a ConfigDict raises for a key it lacks (a KeyError, or for an
  attribute an AttributeError around one): the key, and its `did you mean "x" instead of
  "y"?` or ''; None for any other error."""
  if isinstance(error, AttributeError) and error.args and isinstance(error.args[0], KeyError):
    error = error.args[0]
  if not isinstance(error, KeyError) or not error.args:
    return None
  text = str(error.args[0])
  key = re.match(r"'([^']+)'", text)
  if key is None:
    return None
  hint = re.search(r'Did you mean "[^"]+" instead of "[^"]+"\?', text)
  return key[1], f"{hint[0][0].lower()}{hint[0][1:]}" if hint else ""
