"""PLE (Tang et al., RecSys 2020): task-specific and shared experts, extracted level by level.

Each level has `task_experts` experts per task and `shared_experts` shared ones. A task's
gate mixes its own experts and the shared ones (never the other task's), which is what
separates task-specific from common knowledge; below the last level a shared gate mixes all
experts into the shared input of the next level. One level is the CGC of the paper. One
shared table set, trained jointly (`joint.JointModel`).

config.model: num_levels (reference 1), task_experts (2), shared_experts (1), expert_hidden
(widths of each expert MLP, reference (16,)), tower_hidden (hidden widths of each task
tower, reference (8,)).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mtms_jax.models import joint, layers
from mtms_jax.models.layers import MLP


class Network(nn.Module):
  """(B, I) -> num_levels extraction levels -> one tower per task -> logits (B,)."""
  num_levels: int
  task_experts: int
  shared_experts: int
  expert_hidden: Sequence[int]
  tower_hidden: Sequence[int]
  tasks: tuple[str, ...]

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    inputs = {name: x for name in self.tasks + ("shared",)}
    for level in range(self.num_levels):
      inputs = self._level(level, inputs, last=level == self.num_levels - 1)
    features = tuple(self.tower_hidden) + (1,)
    return tuple(MLP(features, name=task)(inputs[task])[:, 0] for task in self.tasks)

  def _level(self, level: int, inputs: dict, last: bool) -> dict:
    """One extraction level: {task or 'shared': (B, I_k)} -> {task [, 'shared']: (B, H)}."""
    counts = {**{task: self.task_experts for task in self.tasks}, "shared": self.shared_experts}
    experts = {name: joint.Experts(n, tuple(self.expert_hidden),
                                   name=f"level{level}_{name}_experts")(inputs[name])
               for name, n in counts.items()}                                # (B, E_name, H)
    out = {}
    for task in self.tasks:
      own = jnp.concatenate([experts[task], experts["shared"]], axis=1)
      out[task] = joint.Gate(own.shape[1], name=f"level{level}_{task}_gate")(inputs[task], own)
    if not last:
      every = jnp.concatenate([experts[name] for name in self.tasks + ("shared",)], axis=1)
      out["shared"] = joint.Gate(every.shape[1], name=f"level{level}_shared_gate")(
          inputs["shared"], every)
    return out


class Model(joint.JointModel):
  """PLE; see the module docstring."""

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict, where: str = "config.model") -> None:
    layers.check_counts(config, where, "num_levels", "task_experts", "shared_experts")
    layers.check_widths(config, where, "expert_hidden", "tower_hidden",
                        allow_empty=("tower_hidden",))

  def make_network(self, config: ml_collections.ConfigDict) -> nn.Module:
    return Network(config.num_levels, config.task_experts, config.shared_experts,
                   tuple(config.expert_hidden), tuple(config.tower_hidden), self.schema.tasks)
