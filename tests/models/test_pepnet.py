"""PEPNet (mtms_jax/models/pepnet.py) against a NumPy implementation of the paper's equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

GAMMA = 2.0


def dense(p, x):
  return x @ p["kernel"] + p["bias"]


def gate_nu(p, x):
  """Gate NU: gamma * sigmoid(W2 relu(W1 x + b1) + b2)."""
  return GAMMA / (1 + np.exp(-dense(p["dense1"], np.maximum(dense(p["dense0"], x), 0))))


def reference(p, x, width, num_dense, tasks, tower_hidden, gate_x=None):
  """Logits of PEPNet (Chang et al. 2023, Sec. 3.3-3.4) for x = [E, dense, one-hot scene].

  Gate inputs read gate_x (default x): the paper's stopped gradients ∅(.) mean that a
  change of E reaches the logits through the gated paths only, never through a gate's input.
  """
  gate_x = x if gate_x is None else gate_x
  e, d, scene = x[:, :width], x[:, width:width + num_dense], x[:, width + num_dense:]
  gate_e = gate_x[:, :width]
  o_ep = gate_nu(p["epnet"], np.concatenate([scene, gate_e], 1)) * e             # EPNet
  gate_o_ep = gate_nu(p["epnet"], np.concatenate([scene, gate_e], 1)) * gate_e
  h = {t: np.concatenate([o_ep, d], 1) for t in tasks}
  for i, units in enumerate(tower_hidden):                                      # PPNet
    delta = gate_nu(p[f"ppnet{i}"], np.concatenate([e, gate_o_ep], 1))
    for k, t in enumerate(tasks):
      h[t] = np.maximum(dense(p[f"{t}_dense{i}"], h[t]), 0) * delta[:, k * units:(k + 1) * units]
  return [dense(p[f"{t}_logit"], h[t])[:, 0] for t in tasks]


def reference_of(model, ranking, x, **kwargs):
  return reference(ranking, x, model.layout.width, model.schema.num_dense, model.schema.tasks,
                   model.config.tower_hidden, **kwargs)


def network_fn(model, params):
  return lambda x: model.network.apply({"params": params["ranking"]}, x)


@pytest.mark.parametrize("tasks", [None, ("ctr",)])
def test_forward_equals_the_papers_equations(joint_inputs, tasks):
  model, params, ranking, x, _ = joint_inputs("pepnet", tasks)
  logits = network_fn(model, params)(jnp.asarray(x, jnp.float32))
  expected = reference_of(model, ranking, x)
  assert len(logits) == len(model.schema.tasks) == len(expected)
  for got, want in zip(logits, expected):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gate_inputs_carry_no_gradient(joint_inputs):
  # The derivative along a change v of the embeddings E equals the paper's, whose gates
  # read E with its gradient stopped: a central difference of the reference with the gate
  # inputs held at x, against jax's JVP.
  model, params, ranking, x, _ = joint_inputs("pepnet")
  v = np.zeros_like(x)
  v[:, :model.layout.width] = np.random.default_rng(0).standard_normal(
      (x.shape[0], model.layout.width))
  h = 1e-7          # small: a ReLU kink inside the difference would spoil it
  stopped = [(a - b) / (2 * h) for a, b in zip(reference_of(model, ranking, x + h * v, gate_x=x),
                                               reference_of(model, ranking, x - h * v, gate_x=x))]
  through_gates = [(a - b) / (2 * h) for a, b in zip(reference_of(model, ranking, x + h * v),
                                                     reference_of(model, ranking, x - h * v))]
  # Examples are independent: the gradient of the summed logits, dotted with v row by row,
  # is each example's derivative along v (reverse mode: the layers' matmul is a custom_vjp).
  grad = jax.grad(lambda x: sum(jnp.sum(logit) for logit in network_fn(model, params)(x)))(
      jnp.asarray(x, jnp.float32))
  got = np.sum(np.asarray(grad) * v, axis=1)
  np.testing.assert_allclose(got, sum(stopped), rtol=1e-3, atol=1e-5)
  assert not np.allclose(got, sum(through_gates), rtol=1e-3, atol=1e-5)   # the stops matter


def test_a_scenes_embedding_moves_only_with_its_rows(joint_inputs):
  # EPNet's scene embedding E_d is the gate's first kernel's rows for the one-hot scene;
  # the gate itself is shared. A batch of scene 0 alone moves scene 0's row, not scene 1's.
  model, params, _, x, scene = joint_inputs("pepnet")
  only0 = jnp.asarray(x[scene == 0], jnp.float32)

  def loss(ranking):
    return sum(jnp.sum(logit) for logit in model.network.apply({"params": ranking}, only0))

  kernel = jax.grad(loss)(params["ranking"])["epnet"]["dense0"]["kernel"]      # (S + W, g)
  assert np.abs(kernel[0]).max() > 0 and np.abs(kernel[1]).max() == 0
  assert np.abs(kernel[2:]).max() > 0          # the gate's shared weights learn from all rows


def test_pepnet_trains_exports_and_serves(trained_and_served):
  results = trained_and_served("pepnet")
  assert np.isfinite([results["test/all/ctr/auc"], results["test/all/cvr/auc"]]).all()
