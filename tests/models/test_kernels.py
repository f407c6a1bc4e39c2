"""Native per-scene matmul kernels against the XLA computation they replace."""

import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtms_jax import machine
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


# The AVX2 library in a process of its own (one process registers one set of kernels),
# checked against XLA at widths through its blocked paths (8, 16 and 32 outputs).
_AVX2_CHECK = """
import jax, jax.numpy as jnp, numpy as np
from mtms_jax.models import kernels
assert kernels.available(), kernels.loaded_library()
for inputs, outputs in [(37, 16), (20, 8), (13, 32)]:
  x = jax.random.normal(jax.random.key(0), (300, inputs))
  w = jax.random.normal(jax.random.key(1), (3, inputs, outputs))
  scene = jax.random.randint(jax.random.key(2), (300,), 0, 3)
  ref = lambda x, w: jnp.sum(jnp.sin(jnp.einsum("bi,bih->bh", x, w[scene])))
  got = lambda x, w: jnp.sum(jnp.sin(kernels.scene_matmul(x, w, scene)))
  for a, b in zip(jax.jit(jax.grad(got, (0, 1)))(x, w), jax.grad(ref, (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
print("ok")
"""


@pytest.mark.skipif(shutil.which("g++") is None or "avx2" not in machine.vector_extensions(),
                    reason="needs g++ and an AVX2 CPU")
def test_avx2_build_compiles_without_emulated_vectors_and_matches_xla(tmp_path):
  # -Werror=psabi: a vector wider than AVX2's registers would fail the build.
  target = kernels.build(isa="avx2", target=tmp_path / "libscene_matmul_avx2.so")
  env = {**os.environ, "MTMS_JAX_KERNELS": str(target), "JAX_PLATFORMS": "cpu"}
  done = subprocess.run([sys.executable, "-c", _AVX2_CHECK], env=env, capture_output=True,
                        text=True, cwd=kernels.SOURCE.parents[3])
  assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
