"""M2M (Zhang et al., WSDM 2022, "Leaving No One Behind"): weights generated per scene.

A shared meta unit turns a scene's representation into the weights of the layers that mix
the experts and of the task towers, so that every scene has its own network without a
parameter set of its own. One shared table set, trained jointly (`joint.JointModel`).

Notation: B batch, S scenes, W summed field dims, Nd dense features, E experts, H expert
width, K scene representation width, T tasks.

- Experts: E MLPs over [E (W), dense (Nd)], as MMoE's (`joint.Experts`), (B, E, H). The
  paper's experts read a Transformer over behaviour sequences; our data sets have none.
- Scene knowledge representation: s = relu(Dense(one-hot scene)) (K,): the paper's MLP over
  the scene's features, which are the scene id here. So there are S representations, and
  the meta unit runs on those S rows, not on B: the generated weights are (S, I, J).
- Meta unit (`MetaDense`): kernel = reshape(s V + V0) (I, J), bias = s U + U0 (J,), with V,
  U, V0, U0 shared by every scene; an example goes through its own scene's kernel.
- Meta attention, per task t: a_i = relu(Meta_t([e_i, task_t])) v_t, alpha = softmax_i(a),
  r_t = sum_i alpha_i e_i (B, H). task_t is a learned (H,) vector: the paper's MLP of a task
  embedding, a constant per task, is any vector a parameter can be. The units are taken
  less the first expert's, which the softmax drops (`shift_free_relu`: it makes the
  gradient of the bias path exactly 0 where the softmax makes it 0).
- Meta tower, per task: tower_layers residual meta layers h = relu(Meta(h) + h) from r_t,
  then an MLP of tower_hidden widths to the logit.

Each example is multiplied by every scene's generated kernel and keeps its own (one matmul
of S * J columns): S times the FLOPs of one layer, cheap for the few scenes of our data
sets. The attention's pairs [e_i, task_t] have task_t's half constant, folded into a
per-scene bias, so its FLOPs are E * H * S * H an example and task, not E * 2H * S * H.
Most FLOPs are the experts' (MMoE's); the attention and towers are narrow layers, whose time
on a CPU goes to passes over (B, E, H) arrays more than to FLOPs, so `MetaDense` takes the
scene's columns by slices (up to MAX_SLICED_SCENES scenes), not by a sum over a scene axis.

config.model: num_experts (reference 4), expert_hidden (widths of each expert, reference
(16,)), scene_dim (K, reference 8), tower_layers (meta layers of each tower, reference 1),
tower_hidden (the towers' MLP widths before the logit, reference (8,)).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mtms_jax.models import joint, layers
from mtms_jax.models.layers import MLP, Dense

# Up to this many scenes MetaDense sums the scenes' slices, beyond it sums over their axis.
MAX_SLICED_SCENES = 4


class MetaDense(nn.Module):
  """A dense layer whose kernel and bias the meta unit generates from each scene's
  representation: [h, constant] (B, N, I + C), scene_repr (S, K), select (B, S) one-hot ->
  (h times its scene's kernel (B, N, J), its scene's bias (B, 1, J)); the layer's output
  is their sum, which the meta attention takes apart (`Network`).

  constant (C,), the same for every example (the attention's task vector), is optional: its
  rows of each scene's kernel give a per-scene vector that joins the bias, so the batch
  multiplies only the I rows of h rather than a broadcast copy of the constant.

  The generators' init scales the generated kernel to about lecun's variance, 1 / (I + C),
  for a representation of unit mean square. The generated weights are sown as intermediates
  ('kernel' (S, I + C, J), 'bias' (S, J)) for inspection.
  """
  features: int

  @nn.compact
  def __call__(self, h: jax.Array, scene_repr: jax.Array, select: jax.Array,
               constant: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    (batch, n, width), num_scenes, fan_out = h.shape, scene_repr.shape[0], self.features
    fan_in = width + (0 if constant is None else constant.shape[0])
    init = nn.initializers.variance_scaling(1.0 / fan_in, "fan_in", "normal")
    kernel = nn.Dense(fan_in * fan_out, kernel_init=init, name="kernel_generator")(scene_repr)
    bias = nn.Dense(fan_out, name="bias_generator")(scene_repr)
    kernel = kernel.reshape(num_scenes, fan_in, fan_out)
    self.sow("intermediates", "kernel", kernel)
    self.sow("intermediates", "bias", bias)
    if constant is not None:
      bias = bias + jnp.einsum("c,scj->sj", constant, kernel[:, width:])
    # A plain matmul: for these narrow layers layers.matmul's weight-gradient rule is slower.
    y = h.reshape(batch * n, width) @ kernel[:, :width].transpose(1, 0, 2).reshape(
        width, num_scenes * fan_out)
    y = y.reshape(batch, n, num_scenes, fan_out) * select[:, None, :, None]
    # For a few scenes, the scenes' slices summed: elementwise over J, which XLA:CPU runs
    # faster than a sum over the scene axis (and than an einsum, B tiny dots); for many,
    # the slices' ops would outweigh it (S = 100: 4x slower, 13 s to compile).
    if num_scenes <= MAX_SLICED_SCENES:
      return sum(y[:, :, s] for s in range(num_scenes)), (select @ bias)[:, None]
    return jnp.sum(y, axis=2), (select @ bias)[:, None]


def shift_free_relu(y: jax.Array, c: jax.Array) -> jax.Array:
  """relu(y + c) less relu(y_0 + c), for y (B, E, J) and c (B, 1, J): the attention's units
  before its softmax over the E experts, which drops the second term (the same for every
  expert; y_0 is the first expert's).

  What the term removes is c's gradient where every expert's unit is active (or none is):
  there it is exactly 0, as the softmax makes it, where relu(y + c) alone gives float noise
  of a sum over experts that cancels, which differs with the batch's layout over devices and
  which Adam, dividing by the gradient's size, turns into steps of the learning rate. So c
  is broadcast once: its two terms' gradients cancel element by element, before the sum.
  y_0 takes no gradient through the second term (which is 0 to the softmax in any case).
  """
  c = jnp.broadcast_to(c, y.shape)
  return nn.relu(y + c) - nn.relu(jax.lax.stop_gradient(y[:, :1]) + c)


class Network(nn.Module):
  """[E, dense, scene] (B, W + Nd + S) -> experts, meta attention, meta towers -> logits."""
  num_scenes: int
  num_experts: int
  expert_hidden: Sequence[int]
  scene_dim: int
  tower_layers: int
  tower_hidden: Sequence[int]
  tasks: Sequence[str]

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    features, select = x[:, :-self.num_scenes], x[:, -self.num_scenes:]
    experts = joint.Experts(self.num_experts, tuple(self.expert_hidden), name="experts")(
        features)                                                                # (B, E, H)
    width = experts.shape[-1]
    scene_repr = nn.relu(Dense(self.scene_dim, name="scene")(
        jnp.eye(self.num_scenes, dtype=x.dtype)))                                 # (S, K)
    logits = []
    for task in self.tasks:
      task_repr = self.param(f"{task}_repr", nn.initializers.normal(1.0), (width,))
      y, c = MetaDense(width, name=f"{task}_attention")(experts, scene_repr, select,
                                                        constant=task_repr)
      scores = shift_free_relu(y, c)                                            # of [e_i, task]
      v = self.param(f"{task}_attention_v", nn.initializers.lecun_normal(), (width, 1))
      alpha = nn.softmax((scores @ v)[..., 0], axis=-1)                          # (B, E)
      h = jnp.einsum("be,beh->bh", alpha, experts)[:, None]                   # r_t (B, 1, H)
      for j in range(self.tower_layers):
        y, c = MetaDense(width, name=f"{task}_meta{j}")(h, scene_repr, select)
        h = nn.relu(y + c + h)
      logits.append(MLP(tuple(self.tower_hidden) + (1,), name=task)(h[:, 0])[:, 0])
    return tuple(logits)


class Model(joint.JointModel):
  """M2M; see the module docstring."""

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict, where: str = "config.model") -> None:
    layers.check_counts(config, where, "num_experts", "scene_dim", "tower_layers")
    layers.check_widths(config, where, "expert_hidden", "tower_hidden",
                        allow_empty=("tower_hidden",))

  def make_network(self, config: ml_collections.ConfigDict) -> nn.Module:
    return Network(self.num_scenes, config.num_experts, tuple(config.expert_hidden),
                   config.scene_dim, config.tower_layers, tuple(config.tower_hidden),
                   self.schema.tasks)
