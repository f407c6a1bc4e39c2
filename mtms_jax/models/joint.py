"""What the field's standard multi-task models share: one table set, one phase, scene input.

Shared-Bottom, MMoE, PLE and ESMM (`shared_bottom.py`, `mmoe.py`, `ple.py`, `esmm.py`) are
the models that torch-rechub, PaddleRec and FuxiCTR ship for CTR/CVR. They differ only in
the network between the embeddings and the two logits; this module holds the rest.

Notation: B batch, S scenes, F fields, W = summed field dims, Nd dense features,
I = W + Nd + S network input, E experts, H expert width.

- One component (`embedding.make_layout(schema, 1)`): every scene and task reads the same
  tables, the classic "shared embedding" design the MTMS paper argues against.
- One phase, 'joint', that trains params['embedding'] (tables) and params['ranking'] (the
  network) together on one loss: the field's usual single-stage training, not the MTMS
  alternating procedure.
- Scene-aware: the network input is [field embeddings (W), dense (Nd), one-hot scene (S)].
  A one-hot times the first layer's kernel is a learned per-scene bias of that layer, so
  these models are fair multi-scene baselines: they know which scene an example is from.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mtms_jax import embedding
from mtms_jax.models import layers
from mtms_jax.schema import FeatureSchema


class Experts(nn.Module):
  """E independent MLPs on the same input, weights stacked: (B, I) -> (B, E, H).

  One einsum per layer instead of a Python loop over experts; every layer (the last too) is
  followed by a ReLU, as the experts of torch-rechub and FuxiCTR are. The first layer is one
  (B, I) x (I, E * H) matmul: broadcasting the input to (B, E, I) first would copy it E times.
  """
  num_experts: int
  features: Sequence[int]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    for i, width in enumerate(self.features):
      kernel = self.param(f"kernel{i}", init, (self.num_experts, x.shape[-1], width))
      bias = self.param(f"bias{i}", nn.initializers.zeros, (self.num_experts, width))
      if i == 0:
        y = layers.matmul(x, kernel.transpose(1, 0, 2).reshape(x.shape[-1], -1))
        y = y.reshape(x.shape[0], self.num_experts, width)
      else:
        y = jnp.einsum("bei,eih->beh", x, kernel)
      x = nn.relu(y + bias)
    return x


class Gate(nn.Module):
  """Softmax weights over E experts computed from the input, and their mix (B, H)."""
  num_experts: int

  @nn.compact
  def __call__(self, x: jax.Array, experts: jax.Array) -> jax.Array:
    weights = nn.softmax(layers.Dense(self.num_experts, name="logits")(x))   # (B, E)
    return jnp.einsum("be,beh->bh", weights, experts)


class JointModel(abc.ABC):
  """The model protocol (`mtms_jax.models`) around a flax `network(x) -> logits`, one (B,)
  array per task of `schema.tasks` (ctr, cvr; ctr alone on CTR-only data).

  Subclasses define `check_config(config, where)`, a classmethod checking the config fields
  it reads, and `make_network(config) -> nn.Module`, giving the network `self.schema.tasks`.
  """

  phases = {"joint": ("embedding", "ranking")}
  eval_phase = "joint"

  def __init__(self, schema: FeatureSchema, config: ml_collections.ConfigDict):
    self.schema = schema
    self.config = config
    self.num_scenes = schema.num_scenes
    self.layout = embedding.make_layout(schema, 1)
    self.check_config(config)
    self.network = self.make_network(config)

  @classmethod
  @abc.abstractmethod
  def check_config(cls, config: ml_collections.ConfigDict, where: str = "config.model") -> None:
    """Raises UserError naming the first wrong field of `config` (`where`: its key)."""

  @abc.abstractmethod
  def make_network(self, config: ml_collections.ConfigDict) -> nn.Module:
    """The flax module mapping the (B, I) input to a logit per task, each (B,)."""

  @property
  def input_width(self) -> int:
    return self.layout.width + self.schema.num_dense + self.num_scenes

  def components(self, scene: jax.Array, phase: str) -> jax.Array:
    del phase  # one phase, one component
    return jnp.zeros((scene.shape[0], 1), jnp.int32)

  def init(self, rng: jax.Array) -> dict:
    rng_tables, rng_network = jax.random.split(rng)
    # The tables outside jit: init_tables fills them in place in chunks, which a traced
    # function cannot (it held several table-sized buffers at once).
    return {"embedding": {"tables": embedding.init_tables(
        rng_tables, self.layout, self.config.get("embedding_init_stddev", 0.05))},
            "ranking": jax.jit(self._init_network)(rng_network)}

  def _init_network(self, rng: jax.Array) -> dict:
    # Jitted: run eagerly, every distinct parameter shape compiles its own initializer
    # (about a second each on a CPU, and the experts of MMoE and PLE have many); jitted,
    # they compile once.
    return self.network.init(rng, jnp.zeros((1, self.input_width)))["params"]

  def apply(self, params, rows, batch, phase: str, train: bool = False,
            axis_name: str | None = None) -> dict[str, jax.Array]:
    del train, axis_name     # no batch statistics
    x = self.network_input(rows, batch, phase)
    return self.logits_by_task(self.network.apply({"params": params["ranking"]}, x))

  def network_input(self, rows, batch, phase: str) -> jax.Array:
    """[field embeddings (W), dense (Nd), one-hot scene (S)]: (B, I)."""
    if phase != "joint":
      raise ValueError(f"phase {phase!r}; {type(self).__module__} has phases "
                       f"{tuple(self.phases)}")
    x = embedding.flatten_rows(rows)[:, 0]                                  # (B, W)
    scene = jax.nn.one_hot(batch["scene"], self.num_scenes, dtype=x.dtype)   # (B, S)
    return jnp.concatenate([x, batch["dense"], scene], axis=-1)

  def logits_by_task(self, logits) -> dict[str, jax.Array]:
    return {f"{task}_logit": logit for task, logit in zip(self.schema.tasks, logits)}
