"""MMoE (Ma et al., KDD 2018): shared experts, one softmax gate and one tower per task.

Every expert sees the whole input; each task mixes the E expert outputs with its own gate,
so tasks can share experts as much or as little as helps them. One shared table set,
trained jointly (`joint.JointModel`).

config.model: num_experts (reference 8); expert_hidden, widths of each expert MLP
(reference (16,)); tower_hidden, hidden widths of each task tower (reference (8,)).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import ml_collections

from mtms_jax.models import joint, layers
from mtms_jax.models.layers import MLP


class Network(nn.Module):
  """(B, I) -> experts (B, E, H) -> per-task gate mix (B, H) -> tower -> logit (B,)."""
  num_experts: int
  expert_hidden: Sequence[int]
  tower_hidden: Sequence[int]
  tasks: Sequence[str]

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    experts = joint.Experts(self.num_experts, tuple(self.expert_hidden), name="experts")(x)
    features = tuple(self.tower_hidden) + (1,)
    logits = []
    for task in self.tasks:
      mixed = joint.Gate(self.num_experts, name=f"gate_{task}")(x, experts)
      logits.append(MLP(features, name=task)(mixed)[:, 0])
    return tuple(logits)


class Model(joint.JointModel):
  """MMoE; see the module docstring."""

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict, where: str = "config.model") -> None:
    layers.check_counts(config, where, "num_experts")
    layers.check_widths(config, where, "expert_hidden", "tower_hidden",
                        allow_empty=("tower_hidden",))

  def make_network(self, config: ml_collections.ConfigDict) -> nn.Module:
    return Network(config.num_experts, tuple(config.expert_hidden), tuple(config.tower_hidden),
                   self.schema.tasks)
