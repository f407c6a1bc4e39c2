"""Shared-Bottom (Caruana 1997): one bottom MLP shared by the tasks, one tower per task.

The hard-parameter-sharing baseline of the multi-task literature, on one shared table set,
trained jointly (`joint.JointModel`).

config.model: bottom_hidden, widths of the shared bottom (reference (117,), ReLU after each
layer); tower_hidden, hidden widths of each task tower (reference (8,)).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import ml_collections

from mtms_jax.models import joint, layers
from mtms_jax.models.layers import MLP


class Network(nn.Module):
  """(B, I) -> bottom (B, H) -> a tower per task (ctr, cvr) -> logits (B,)."""
  bottom_hidden: Sequence[int]
  tower_hidden: Sequence[int]
  tasks: Sequence[str]

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    h = nn.relu(MLP(tuple(self.bottom_hidden), name="bottom")(x))
    features = tuple(self.tower_hidden) + (1,)
    return tuple(MLP(features, name=task)(h)[:, 0] for task in self.tasks)


class Model(joint.JointModel):
  """Shared-Bottom; see the module docstring."""

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict, where: str = "config.model") -> None:
    layers.check_widths(config, where, "bottom_hidden", "tower_hidden",
                        allow_empty=("tower_hidden",))

  def make_network(self, config: ml_collections.ConfigDict) -> nn.Module:
    return Network(tuple(config.bottom_hidden), tuple(config.tower_hidden), self.schema.tasks)
