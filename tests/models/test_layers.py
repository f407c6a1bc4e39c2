"""SceneMLP: every route computes the same function and gradients as a per-example loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtms_jax.models import kernels, layers

FEATURES = (6, 3, 2)


def _inputs(num_scenes, batch=40, width=5):
  kx, ks = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (batch, width))
  # Skewed so that some scenes are absent and one fills several tiles.
  scene = (num_scenes * jax.random.uniform(ks, (batch,)) ** 3).astype(jnp.int32)
  return x, scene


@jax.jit
def _reference(params, x, scene):
  """Every example through every scene's layers, its own scene's output kept."""
  p = params["params"]
  num_scenes = p["kernel0"].shape[0]
  out = jnp.zeros((x.shape[0], FEATURES[-1]))
  for s in range(num_scenes):
    h = x
    for i in range(len(FEATURES)):
      h = h @ p[f"kernel{i}"][s] + p[f"bias{i}"][s]
      h = jax.nn.relu(h) if i < len(FEATURES) - 1 else h
    out = jnp.where((scene == s)[:, None], h, out)
  return out


@pytest.mark.parametrize("num_scenes", [1, 3, 11])
@pytest.mark.parametrize("route", ["all", "gather", "grouped", "ragged", "kernel"])
def test_routes_match_per_example_reference(num_scenes, route):
  if route == "kernel" and not kernels.available():
    pytest.skip("native kernels not built (make setup builds them)")
  x, scene = _inputs(num_scenes)
  mlp = layers.SceneMLP(num_scenes, FEATURES, route=route, tile=4)
  params = mlp.init(jax.random.key(1), x, scene)
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape),
                        params)    # non-zero biases
  # Jitted: one compile each is cheaper than running the ops one by one.
  apply, reference = jax.jit(mlp.apply), jax.jit(_reference)
  np.testing.assert_allclose(apply(params, x, scene), reference(params, x, scene),
                             rtol=1e-5, atol=1e-5)

  def loss(fn):
    return lambda p, x: jnp.sum(jnp.sin(fn(p, x, scene)))
  got = jax.jit(jax.grad(loss(mlp.apply), argnums=(0, 1)))(params, x)
  want = jax.jit(jax.grad(loss(_reference), argnums=(0, 1)))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, want)


def test_auto_route_by_scenes_and_width(monkeypatch):
  monkeypatch.setattr(kernels, "available", lambda: True)
  assert layers.SceneMLP(2, (16,))._route((320, 16)) == "kernel"
  assert layers.SceneMLP(100, (16, 1))._route((320, 16, 1)) == "kernel"
  monkeypatch.setattr(kernels, "available", lambda: False)
  assert layers.SceneMLP(4, (16,))._route((320, 16)) == "all"
  assert layers.SceneMLP(100, (2,))._route((32, 2)) == "gather"
  assert layers.SceneMLP(100, (16, 1))._route((320, 16, 1)) == "grouped"
  monkeypatch.setattr(kernels, "available", lambda: True)
  # 'xla' never picks the native kernel; off the CPU it groups the scenes with ragged_dot.
  assert layers.SceneMLP(2, (16,), route="xla")._route((320, 16)) == "all"
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert layers.SceneMLP(2, (16,), route="xla")._route((320, 16)) == "ragged"


def test_group_by_scene_places_each_scene_in_its_own_tiles():
  scene = jnp.array([2, 0, 2, 2, 1, 2, 0, 2, 2])
  groups = layers.group_by_scene(scene, num_scenes=4, tile=2)
  slot = np.asarray(groups.slot)
  assert len(set(slot.tolist())) == len(slot)                      # no two share a slot
  tile_of = slot // 2
  np.testing.assert_array_equal(np.asarray(groups.tile_scene)[tile_of], scene)
  assert groups.tile_scene.shape == (-(-9 // 2) + 4,)              # static bound


def test_auto_tile_keeps_padding_near_a_third_of_the_batch():
  assert layers.auto_tile(2048, 10) == 64           # 2048 / 30 = 68 -> 64
  assert layers.auto_tile(2048, 30) == 16           # 22 -> 16
  assert layers.auto_tile(2048, 100) == 16          # 6 -> the floor, 16
  assert layers.auto_tile(2048, 5) == 64            # 136 -> the ceiling, 64
  assert layers.auto_tile(8, 3) == 16
