"""ESMM (Ma et al., SIGIR 2018), standalone: shared tables, a CTR and a CVR tower.

The field's single-stage ESMM, as torch-rechub and PaddleRec ship it: both towers read the
same embeddings of one shared table set (`joint.JointModel`), and training is joint, with
the ESMM loss ctr+ctcvr (paper Eq. 1), so CVR is learned only as a factor of CTCVR over all
impressions. (The paper's own ESMM rows are the MTMS model with model.sharing='tasks' and
the alternating procedure; see experiments/esmm.py.)

config.model: tower_hidden, hidden widths of each tower (reference (16, 8)); each tower
ends in one logit.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import ml_collections

from mtms_jax.models import joint, layers
from mtms_jax.models.layers import MLP


class Network(nn.Module):
  """A tower per task on the same input: (B, I) -> ctr, cvr logits (B,)."""
  tower_hidden: Sequence[int]
  tasks: Sequence[str]

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    features = tuple(self.tower_hidden) + (1,)
    return tuple(MLP(features, name=task)(x)[:, 0] for task in self.tasks)


class Model(joint.JointModel):
  """ESMM; see the module docstring."""

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict, where: str = "config.model") -> None:
    layers.check_widths(config, where, "tower_hidden", allow_empty=("tower_hidden",))

  def make_network(self, config: ml_collections.ConfigDict) -> nn.Module:
    return Network(tuple(config.tower_hidden), self.schema.tasks)
