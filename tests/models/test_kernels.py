"""Native per-scene matmul kernels against the XLA computation they replace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtms_jax.models import kernels

pytestmark = pytest.mark.skipif(not kernels.available(),
                                reason="native kernels not built (make setup builds them)")


def _reference(x, weights, scene):
  return jnp.einsum("bi,bih->bh", x, weights[jnp.clip(scene, 0, weights.shape[0] - 1)])


# Widths through every code path: register-blocked outputs of 8, 16 and 32 floats, the
# generic loop (6, 320), rows of the weight gradient not a multiple of its 8-row blocks,
# input gradients through the in-kernel transpose (64 and 16 inputs) and around it.
@pytest.mark.parametrize("inputs,outputs", [(37, 16), (64, 16), (20, 8), (13, 32), (5, 6), (16, 320)])
def test_scene_matmul_and_its_gradients_match_xla(inputs, outputs):
  kx, kw, ks, kd = jax.random.split(jax.random.key(0), 4)
  num_scenes, batch = 7, 300
  x = jax.random.normal(kx, (batch, inputs))
  weights = jax.random.normal(kw, (num_scenes, inputs, outputs))
  # Skewed: scene 6 absent, and two ids outside [0, 7), which clamp as jnp indexing does.
  scene = (6 * jax.random.uniform(ks, (batch,)) ** 2).astype(jnp.int32)
  scene = scene.at[:2].set(jnp.array([-3, 9], jnp.int32))
  np.testing.assert_allclose(kernels.scene_matmul(x, weights, scene),
                             _reference(x, weights, scene), rtol=1e-5, atol=1e-4)
  dy = jax.random.normal(kd, (batch, outputs))

  def loss(fn):
    return lambda x, w: jnp.sum(fn(x, w, scene) * dy)
  got = jax.jit(jax.grad(loss(kernels.scene_matmul), argnums=(0, 1)))(x, weights)
  want = jax.grad(loss(_reference), argnums=(0, 1))(x, weights)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


def test_kernels_are_deterministic():
  x = jax.random.normal(jax.random.key(1), (512, 64))
  weights = jax.random.normal(jax.random.key(2), (5, 64, 16))
  scene = jax.random.randint(jax.random.key(3), (512,), 0, 5)
  grad = jax.jit(jax.grad(lambda x, w: jnp.sum(kernels.scene_matmul(x, w, scene) ** 2),
                          argnums=(0, 1)))
  first, second = grad(x, weights), grad(x, weights)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)
