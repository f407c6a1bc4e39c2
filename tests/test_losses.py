import jax.numpy as jnp
import numpy as np
import pytest

from mtms_jax import losses


def _bce(p, y):
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def test_per_example_matches_hand_computation():
  a, b = np.array([0.3, -1.2, 2.0]), np.array([-0.5, 0.7, 0.1])
  click, conv = np.array([1., 0., 1.]), np.array([1., 0., 0.])
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


def test_bad_spec():
  with pytest.raises(ValueError, match="distinct"):
    losses.parse_loss("ctr+ctr")
  with pytest.raises(ValueError, match="expected"):
    losses.parse_loss("ctr+cvx")
