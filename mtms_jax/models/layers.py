"""Building blocks shared by the models. B batch, S scenes, I input width, H width."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
  """Dense layers with ReLU between them; the last layer is linear."""
  features: Sequence[int]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.features):
      x = nn.Dense(width, name=f"dense{i}")(x)
      if i < len(self.features) - 1:
        x = nn.relu(x)
    return x


class SceneMLP(nn.Module):
  """An MLP with its own weights per scene: example b goes through scene[b]'s weights.

  Weights are stacked over scenes (kernel (S, I, H)) so there is no Python loop over scenes.
  Every example is multiplied by every scene's weights and its own scene's result is kept:
  S times the FLOPs of one MLP, the cheapest choice for a handful of scenes.
  """
  num_scenes: int
  features: Sequence[int]
  activate_last: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, scene: jax.Array) -> jax.Array:
    """x (B, I), scene (B,) int -> (B, features[-1])."""
    one_hot = jax.nn.one_hot(scene, self.num_scenes, dtype=x.dtype)            # (B, S)
    init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    for i, width in enumerate(self.features):
      kernel = self.param(f"kernel{i}", init, (self.num_scenes, x.shape[-1], width))
      bias = self.param(f"bias{i}", nn.initializers.zeros, (self.num_scenes, width))
      x = jnp.einsum("bi,sih,bs->bh", x, kernel, one_hot) + one_hot @ bias
      if i < len(self.features) - 1 or self.activate_last:
        x = nn.relu(x)
    return x
