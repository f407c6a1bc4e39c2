"""Errors a user can cause and fix: a config value, a data file, a command-line argument.

`UserError` is a ValueError, so callers and tests that expect ValueError keep working;
`mtms_jax.main` prints it as one line, without a traceback, and exits with status 2. Raise it
for anything the user can correct, and check such things before any training starts, so
that no work is lost to them. Bugs stay ordinary exceptions with their tracebacks.
"""


class UserError(ValueError):
  """A mistake in the user's config, data or command line; the message says how to fix it."""


EXIT_USER_ERROR = 2
