"""M2M (mtms_jax/models/m2m.py) against a NumPy implementation of the paper's equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtms_jax.models import m2m


def relu(x):
  return np.maximum(x, 0)


def dense(p, x):
  return x @ p["kernel"] + p["bias"]


def meta_dense(p, h, scene_repr, scene):
  """The meta unit (Zhang et al. 2022, Sec. 4.3): W = reshape(V s + V0), b = U s + U0 from
  each example's scene representation s; h (B, N, I) -> (B, N, J)."""
  s = scene_repr[scene]                                                      # (B, K)
  fan_out = p["bias_generator"]["bias"].shape[0]
  kernel = dense(p["kernel_generator"], s).reshape(len(scene), -1, fan_out)  # (B, I, J)
  return np.einsum("bni,bij->bnj", h, kernel) + dense(p["bias_generator"], s)[:, None]


def reference(p, x, num_scenes, tasks, tower_layers):
  """Logits of M2M for x = [E, dense, one-hot scene]: experts, meta attention (Eq. 6-8),
  meta towers with residuals (Eq. 9-10), then the output MLP."""
  features, scene = x[:, :-num_scenes], np.argmax(x[:, -num_scenes:], axis=1)
  ex = p["experts"]
  experts = relu(np.einsum("bi,eih->beh", features, ex["kernel0"]) + ex["bias0"])  # (B, E, H)
  scene_repr = relu(dense(p["scene"], np.eye(num_scenes)))                          # (S, K)
  logits = []
  for t in tasks:
    pairs = np.concatenate([experts, np.broadcast_to(p[f"{t}_repr"], experts.shape)], -1)
    a = relu(meta_dense(p[f"{t}_attention"], pairs, scene_repr, scene)) @ p[f"{t}_attention_v"]
    alpha = np.exp(a[..., 0] - a[..., 0].max(1, keepdims=True))
    alpha /= alpha.sum(1, keepdims=True)
    h = np.einsum("be,beh->bh", alpha, experts)[:, None]
    for j in range(tower_layers):
      h = relu(meta_dense(p[f"{t}_meta{j}"], h, scene_repr, scene) + h)
    h = h[:, 0]
    tower = p[t]
    for i in range(len(tower) - 1):
      h = relu(dense(tower[f"dense{i}"], h))
    logits.append(dense(tower[f"dense{len(tower) - 1}"], h)[:, 0])
  return logits


@pytest.mark.parametrize("tasks", [None, ("ctr",)])
def test_forward_equals_the_papers_equations(joint_inputs, tasks):
  model, params, ranking, x, _ = joint_inputs("m2m", tasks)
  logits = model.network.apply({"params": params["ranking"]}, jnp.asarray(x, jnp.float32))
  expected = reference(ranking, x, model.num_scenes, model.schema.tasks,
                       model.config.tower_layers)
  assert len(logits) == len(model.schema.tasks) == len(expected)
  for got, want in zip(logits, expected):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_generated_weights_differ_per_scene(joint_inputs):
  model, params, _, x, _ = joint_inputs("m2m")
  _, state = model.network.apply({"params": params["ranking"]}, jnp.asarray(x, jnp.float32),
                                 mutable=["intermediates"])
  generated = state["intermediates"]
  assert sorted(generated) == ["ctr_attention", "ctr_meta0", "cvr_attention", "cvr_meta0"]
  for layer in generated.values():
    (kernel,), (bias,) = layer["kernel"], layer["bias"]
    assert kernel.shape[0] == bias.shape[0] == model.num_scenes
    assert not np.allclose(kernel[0], kernel[1]) and not np.allclose(bias[0], bias[1])


def test_a_scenes_output_depends_on_its_own_representation(joint_inputs):
  # The meta unit is shared; what is a scene's own is its representation, from its row of
  # the scene layer. Changing scene 1's row changes scene 1's predictions alone.
  model, params, _, x, scene = joint_inputs("m2m")
  ranking = params["ranking"]
  kernel = ranking["scene"]["kernel"]
  changed = {**ranking, "scene": {**ranking["scene"], "kernel": kernel.at[1].add(0.5)}}
  x = jnp.asarray(x, jnp.float32)
  before = model.network.apply({"params": ranking}, x)
  after = model.network.apply({"params": changed}, x)
  for old, new in zip(before, after):
    np.testing.assert_array_equal(old[scene == 0], new[scene == 0])
    assert np.abs(old[scene == 1] - new[scene == 1]).min() > 0


def test_m2m_trains_exports_and_serves(trained_and_served):
  results = trained_and_served("m2m")
  assert np.isfinite([results["test/all/ctr/auc"], results["test/all/cvr/auc"]]).all()


def attention_inputs(batch=32, experts=8, width=16):
  """Units y (B, E, J), score vector v (J,) and loss weights (B, E) of one task's attention."""
  return (jax.random.normal(jax.random.key(0), (batch, experts, width)),
          jax.random.normal(jax.random.key(1), (width,)),
          jax.random.normal(jax.random.key(2), (batch, experts)))


@pytest.mark.parametrize("shift", [10.0, -10.0])
def test_attention_bias_gradient_is_exactly_zero_where_no_expert_unit_differs(shift):
  # Every expert's unit active (c = +10) or none (c = -10): the softmax over experts does
  # not depend on c, and its gradient is exactly 0, not float noise that Adam would amplify.
  y, v, weights = attention_inputs()

  def loss(c, units):
    return jnp.sum(jax.nn.softmax(units(y, c) @ v, axis=-1) * weights)

  c = jnp.full((32, 1, 16), shift)
  assert np.all(np.asarray(jax.grad(loss)(c, m2m.shift_free_relu)) == 0)


def test_attention_units_give_the_softmax_and_gradient_of_relu():
  y, v, weights = attention_inputs()
  c = jax.random.normal(jax.random.key(3), (32, 1, 16))

  def softmax(y, c, units):
    return jax.nn.softmax(units(y, c) @ v, axis=-1)

  def plain_units(y, c):
    return jax.nn.relu(y + c)

  np.testing.assert_allclose(softmax(y, c, m2m.shift_free_relu), softmax(y, c, plain_units),
                             rtol=1e-6, atol=1e-7)
  grads = [jax.grad(lambda y, c, units=units: jnp.sum(softmax(y, c, units) * weights),
                    argnums=(0, 1))(y, c) for units in (m2m.shift_free_relu, plain_units)]
  for got, want in zip(*grads):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
