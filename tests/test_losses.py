import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtms_jax import losses


def _bce(p, y):
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def test_per_example_matches_hand_computation():
  a, b = np.array([0.3, -1.2, 2.0, 3.0]), np.array([-0.5, 0.7, 0.1, 2.5])   # last: p > 1/2
  click, conv = np.array([1., 0., 1., 1.]), np.array([1., 0., 0., 0.])
  out = losses.per_example({"ctr_logit": jnp.array(a), "cvr_logit": jnp.array(b)},
                           {"click": jnp.array(click), "conversion": jnp.array(conv)})
  np.testing.assert_allclose(out["ctr"], _bce(_sigmoid(a), click), rtol=1e-6)
  np.testing.assert_allclose(out["cvr"], _bce(_sigmoid(b), conv), rtol=1e-6)
  np.testing.assert_allclose(out["ctcvr"], _bce(_sigmoid(a) * _sigmoid(b), conv), rtol=1e-6)


def test_combine_masks_cvr_to_clicked_rows_and_sums_terms():
  a, b = np.array([0.3, -1.2, 2.0, 0.0]), np.array([-0.5, 0.7, 0.1, 3.0])
  click, conv = np.array([1., 0., 1., 0.]), np.array([1., 0., 0., 0.])
  outputs = {"ctr_logit": jnp.array(a), "cvr_logit": jnp.array(b)}
  batch = {"click": jnp.array(click), "conversion": jnp.array(conv)}
  ctr = _bce(_sigmoid(a), click).mean()
  cvr = _bce(_sigmoid(b[[0, 2]]), conv[[0, 2]]).mean()        # clicked rows 0 and 2 only
  ctcvr = _bce(_sigmoid(a) * _sigmoid(b), conv).mean()
  expected = {"ctr+cvr+ctcvr": ctr + cvr + ctcvr, "ctr+ctcvr": ctr + ctcvr, "ctr+cvr": ctr + cvr,
              "cvr": cvr}
  for spec, value in expected.items():
    total, per_task = losses.combine(outputs, batch, spec)
    np.testing.assert_allclose(total, value, rtol=1e-6, err_msg=spec)
  np.testing.assert_allclose(per_task["cvr"], cvr, rtol=1e-6)
  total, _ = losses.combine(outputs, batch, "ctr+cvr", weights={"cvr": 2.0})
  np.testing.assert_allclose(total, ctr + 2 * cvr, rtol=1e-6)


def test_no_clicks_gives_zero_cvr_loss():
  outputs = {"ctr_logit": jnp.zeros(3), "cvr_logit": jnp.ones(3)}
  batch = {"click": jnp.zeros(3), "conversion": jnp.zeros(3)}
  _, per_task = losses.combine(outputs, batch, "ctr+cvr+ctcvr")
  assert per_task["cvr"] == 0.0


@pytest.mark.parametrize("logit", [1e9, -1e9, 50.0, -50.0])
def test_ctcvr_finite_at_extreme_logits(logit):
  out = losses.per_example({"ctr_logit": jnp.array([logit]), "cvr_logit": jnp.array([logit])},
                           {"click": jnp.ones(1), "conversion": jnp.array([0.0])})
  assert np.isfinite(out["ctcvr"]).all()
  if logit < 0:    # p(ctcvr) ~ exp(2 * logit) ~ 0, so the loss of a negative is ~0
    np.testing.assert_allclose(out["ctcvr"], 0.0, atol=1e-12)


@pytest.mark.parametrize("conversion", [0.0, 1.0])
def test_ctcvr_gradient_finite_and_exact(conversion):
  """Logits where p(click & conversion) rounds to 1 in float32 once gave NaN gradients (a
  discarded jnp.where branch's log(0)), which killed long runs; and the gradient is exact."""
  def loss(a, b):
    return losses.per_example({"ctr_logit": a, "cvr_logit": b},
                              {"click": jnp.ones_like(a), "conversion": conversion + 0 * a}
                              )["ctcvr"].sum()
  extreme = jnp.array([1e9, 60.0, 20.0, -20.0, -1e9])
  grads = jax.grad(loss, argnums=(0, 1))(extreme, extreme)
  assert all(np.isfinite(g).all() and (np.abs(g) <= 1.0).all() for g in grads)
  a, b = np.array([3.0, 0.2, -2.0]), np.array([2.5, -0.4, 1.0])
  grad_a = jax.grad(loss)(jnp.array(a), jnp.array(b))
  p = _sigmoid(a) * _sigmoid(b)   # d/da of the BCE of p: (p - y) / (p (1 - p)) * p (1 - sig(a))
  np.testing.assert_allclose(grad_a, (p - conversion) / (1 - p) * (1 - _sigmoid(a)), rtol=1e-5)


def test_bad_spec():
  with pytest.raises(ValueError, match="distinct"):
    losses.parse_loss("ctr+ctr")
  with pytest.raises(ValueError, match="expected"):
    losses.parse_loss("ctr+cvx")
