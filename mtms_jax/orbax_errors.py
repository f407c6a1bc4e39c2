"""What orbax's (and tensorstore's) failures mean to a user: a full disk; the noise of a
failed read."""

from __future__ import annotations

import errno
import logging as std_logging
import os
import sys

from absl import logging


def disk_full(error: BaseException | None) -> bool:
  """Whether `error`, or an error it came from, is a full disk."""
  while error is not None:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(error):    # tensorstore's: a ValueError naming it
      return True
    error = error.__cause__ or error.__context__
  return False


def drop_late_read_callbacks():
  """Keeps `Event loop is closed` tracebacks of a damaged checkpoint's read off stderr.

  orbax reads a checkpoint's arrays with tensorstore futures awaited in an event loop it
  closes once the read fails; the reads still in flight then complete into that closed
  loop, and each prints its RuntimeError through sys.unraisablehook (tens of them, around
  the one warning that matters). They carry nothing: their read was already given up.
  """
  previous = sys.unraisablehook
  if getattr(previous, "drops_late_read_callbacks", False):
    return

  def hook(unraisable):
    tb = unraisable.exc_traceback
    while tb is not None and tb.tb_next is not None:
      tb = tb.tb_next
    if not (isinstance(unraisable.exc_value, RuntimeError) and tb is not None
            and str(unraisable.exc_value) == "Event loop is closed"
            and tb.tb_frame.f_code.co_name == "_check_closed"):
      previous(unraisable)
  hook.drops_late_read_callbacks = True
  sys.unraisablehook = hook


def drop_abandoned_reads():
  """Keeps the echoes of a damaged checkpoint's failed read off stderr (call before reading).

  orbax reads a checkpoint's arrays as concurrent asyncio tasks and raises the first
  failure; the tasks that failed beside it are never awaited, and asyncio logs each one's
  error and traceback when the garbage collector takes the task (one damaged file: one per
  array in it, whenever collection happens to run). The one warning of the failed read says
  all they would.
  """
  log = std_logging.getLogger("asyncio")
  if not any(f is _not_a_never_retrieved_error for f in log.filters):
    log.addFilter(_not_a_never_retrieved_error)


def _not_a_never_retrieved_error(record: std_logging.LogRecord) -> bool:
  return not record.getMessage().startswith(("Task exception was never retrieved",
                                             "Future exception was never retrieved"))


def drop_logged_errors():
  """Keeps orbax's own log records off the console (the commands call it unless -v).

  orbax logs a failed save thread's error, traceback and all, at each place it passes
  through (a full disk: hundreds of lines), and then raises it to the save or close that
  waits for it, where mtms_jax reports it: one line for a full disk, a traceback for a bug.
  """
  logging.get_absl_logger().addFilter(
      lambda record: f"{os.sep}orbax{os.sep}" not in record.pathname)
