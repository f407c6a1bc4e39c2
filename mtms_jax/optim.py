"""One optax transform per phase: the phase's subtrees train, the rest are frozen.

`optax.partition` with `optax.set_to_zero()` on the frozen labels: frozen leaves get zero
updates and no optimizer moments (MaskedNode). Not `optax.masked`, which passes the raw
gradient through for masked-out leaves instead of freezing them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ml_collections
import optax

OPTIMIZERS = {"adam": optax.adam, "adagrad": optax.adagrad, "sgd": optax.sgd,
              "adamw": optax.adamw}


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """config: name (one of OPTIMIZERS), learning_rate, optional clip_norm."""
  if config.name not in OPTIMIZERS:
    raise ValueError(f"optimizer {config.name!r}; expected one of {sorted(OPTIMIZERS)}")
  tx = OPTIMIZERS[config.name](config.learning_rate)
  if config.get("clip_norm"):
    tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
  return tx


def phase_labels(params: Mapping, trainable: Sequence[str]) -> dict[str, str]:
  """A prefix tree of labels: each top-level params key is 'train' or 'frozen'."""
  unknown = set(trainable) - set(params)
  if unknown:
    raise ValueError(f"trainable subtrees {sorted(unknown)} not in params {sorted(params)}")
  return {key: "train" if key in trainable else "frozen" for key in params}


def make_phase_tx(config: ml_collections.ConfigDict, params: Mapping,
                  trainable: Sequence[str]) -> optax.GradientTransformation:
  return optax.partition({"train": make_optimizer(config), "frozen": optax.set_to_zero()},
                         phase_labels(params, trainable))
