"""PEPNet (Chang et al., KDD 2023): embedding and parameter personalisation by gates.

Two gated networks on one shared table set, trained jointly (`joint.JointModel`):

- EPNet personalises the embeddings to the scene. Its gate reads the scene's features (here
  the scene id: a one-hot times the gate's first kernel is a learned scene embedding, the
  paper's E_d) and the embeddings with their gradient stopped, ∅(E):
    delta_domain = GateNU([E_d, ∅(E)])  (B, W),    O_ep = delta_domain * E.
  The gate is shared by the scenes; what is scene-specific is E_d, so a scene's embedding
  moves only with its own rows.
- PPNet personalises the task towers' parameters to the example. Each hidden layer l of the
  towers has one gate over every task, fed the personal prior (the paper's user, item and
  author ids; here every sparse field's embedding, as our schemas do not mark which fields
  are user or item side) and ∅(O_ep):
    delta^l = GateNU_l([E, ∅(O_ep)])  split into T parts,   H^l_t = delta^l_t * relu(...).
  The gates multiply each hidden layer's output, as FuxiCTR's and Scenario-Wise-Rec's
  PPNet do, rather than the first layer's input too: that input, O_ep, is already gated by
  EPNet, and a gate on it would be T * W wide, the widest layer of the model.
- Gate NU (both): Dense -> ReLU -> Dense -> GAMMA * sigmoid, so a gate scales by (0, 2) and
  starts near 1.

Notation: B batch, S scenes, W summed field dims, Nd dense features, T tasks. The network's
input is joint.py's [E (W), dense (Nd), one-hot scene (S)]; dense features enter the towers
beside O_ep, not gated (EPNet gates embeddings).

config.model: gate_hidden, the hidden width of every Gate NU (reference 16); tower_hidden,
the hidden widths of each task tower, each gated by PPNet (reference (16, 8)).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mtms_jax.models import joint, layers
from mtms_jax.models.layers import Dense

GAMMA = 2.0     # the paper's gate scale: a gate can double a feature as well as mute it


class GateNU(nn.Module):
  """The paper's Gate Neural Unit on the concatenation of input parts of `in_width` columns
  in all: (B, features) in (0, GAMMA). Parameters: dense0 (in_width, hidden), dense1.

  The first layer is `layers.concat_matmul`: a part whose gradient is stopped (the paper's
  ∅(.)) then costs no input gradient, and no concatenated copy of the batch is made.
  `first_layer` and `output` are its two halves, for gates that share an input and run
  their first layers as one matmul (`Network`).
  """
  hidden: int
  features: int
  in_width: int

  def setup(self):
    self.dense0 = layers.DenseParams(self.in_width, self.hidden)
    self.dense1 = Dense(self.features)

  def first_layer(self) -> tuple[jax.Array, jax.Array]:
    return self.dense0()

  def output(self, hidden: jax.Array) -> jax.Array:
    """The gate from its first layer's pre-activation (B, hidden)."""
    return GAMMA * nn.sigmoid(self.dense1(nn.relu(hidden)))

  def __call__(self, parts: Sequence[jax.Array]) -> jax.Array:
    kernel, bias = self.first_layer()
    return self.output(layers.concat_matmul(parts, kernel) + bias)


class Network(nn.Module):
  """[E, dense, scene] (B, W + Nd + S) -> EPNet -> PPNet-gated towers -> logits (B,)."""
  embedding_width: int
  num_dense: int
  gate_hidden: int
  tower_hidden: Sequence[int]
  tasks: Sequence[str]

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    width, dense_end = self.embedding_width, self.embedding_width + self.num_dense
    embedded, dense, scene = x[:, :width], x[:, width:dense_end], x[:, dense_end:]
    num_scenes = x.shape[-1] - dense_end
    domain_gate = GateNU(self.gate_hidden, width, num_scenes + width, name="epnet")(
        [scene, jax.lax.stop_gradient(embedded)])
    personalised = domain_gate * embedded                                     # O_ep (B, W)
    # Every layer's PPNet gate reads [E, ∅(O_ep)]: their first layers as one matmul.
    ppnet = [GateNU(self.gate_hidden, len(self.tasks) * units, 2 * width, name=f"ppnet{i}")
             for i, units in enumerate(self.tower_hidden)]
    kernels, biases = zip(*(gate.first_layer() for gate in ppnet))
    first = layers.concat_matmul([embedded, jax.lax.stop_gradient(personalised)],
                                 jnp.concatenate(kernels, axis=1)) + jnp.concatenate(biases)
    hidden = {task: jnp.concatenate([personalised, dense], axis=-1) for task in self.tasks}
    for i, units in enumerate(self.tower_hidden):
      gates = ppnet[i].output(first[:, i * self.gate_hidden:(i + 1) * self.gate_hidden])
      for t, task in enumerate(self.tasks):
        h = nn.relu(Dense(units, name=f"{task}_dense{i}")(hidden[task]))
        hidden[task] = h * gates[:, t * units:(t + 1) * units]
    return tuple(Dense(1, name=f"{task}_logit")(hidden[task])[:, 0] for task in self.tasks)


class Model(joint.JointModel):
  """PEPNet; see the module docstring."""

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict, where: str = "config.model") -> None:
    layers.check_counts(config, where, "gate_hidden")
    layers.check_widths(config, where, "tower_hidden")

  def make_network(self, config: ml_collections.ConfigDict) -> nn.Module:
    return Network(self.layout.width, self.schema.num_dense, config.gate_hidden,
                   tuple(config.tower_hidden), self.schema.tasks)
