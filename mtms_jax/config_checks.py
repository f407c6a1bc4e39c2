"""Numeric config values checked before anything runs: a batch size of 0, a negative number
of epochs or checkpoints every 0 steps would otherwise crash mid-run or loop silently.

The checks walk the whole config, so the phases of every comparison row are covered too.
"""

from __future__ import annotations

import ml_collections

from mtms_jax.errors import UserError

# Keys whose values must be > 0 wherever they appear in a config.
POSITIVE = ("batch_size", "eval_batch_size", "every_steps", "log_every")


def check(config: ml_collections.ConfigDict, prefix: str = "config") -> None:
  """Raises UserError naming the first key with a value out of range."""
  for key, value in config.items():
    where = f"{prefix}.{key}"
    if isinstance(value, ml_collections.ConfigDict):
      check(value, where)
    elif key in POSITIVE and _number(value) and value <= 0:
      raise UserError(f"{where}={value}: expected > 0")
  steps = config.get("steps", 0)
  if _number(steps) and steps < 0:
    raise UserError(f"{prefix}.steps={steps}: expected >= 0 (0: use epochs)")
  epochs = config.get("epochs")
  if _number(epochs) and epochs <= 0 and not steps:
    raise UserError(f"{prefix}.epochs={epochs}: expected > 0 (or set {prefix}.steps)")


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)
