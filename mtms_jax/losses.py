"""Per-example losses and the one combiner that owns masks and weights.

Tasks: ctr = p(click), cvr = p(conversion | click), ctcvr = ctr x cvr = p(click & conversion).
A loss spec is '+'-joined task names:
  'ctr+cvr+ctcvr'  MTMS (paper Eq. 2): CVR modelled explicitly, on clicked impressions only.
  'ctr+ctcvr'      ESMM (paper Eq. 1): CVR is only an intermediate of CTCVR.
  'ctr+cvr'        separate CTR and CVR models (the paper's baseline).
  'cvr'            the fine-tune loss of the paper's Table I.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from mtms_jax import errors, tasks


def parse_loss(spec: str, where: str = "loss") -> tuple[str, ...]:
  """The tasks of a loss spec; UserError naming `where` (the spec's key) if it is wrong."""
  terms = tuple(t.strip() for t in spec.split("+"))
  errors.expect(set(terms) <= set(tasks.ALL) and len(set(terms)) == len(terms), where, spec,
                f"distinct '+'-joined terms from {tasks.ALL}")
  return terms


def log_not_both(ctr_logit: jax.Array, cvr_logit: jax.Array, log_p: jax.Array) -> jax.Array:
  """log(1 - p), p = sigmoid(a) sigmoid(b) = exp(log_p): exact, with gradients bounded by 1.

  For p <= 1/2, log1p(-p). For p > 1/2, log(1 - p) = logsumexp(-a, -b, -a - b) - softplus(-a)
  - softplus(-b), which stays exact as p -> 1 in float32 where log1p(-p) is log(0). Each
  branch's inputs are replaced where the other is taken: jnp.where passes a NaN gradient of
  the branch it discards (0 * inf) through to the parameters.
  """
  near_one = log_p > -jnp.log(2.0)
  a, b = jnp.where(near_one, ctr_logit, 0.0), jnp.where(near_one, cvr_logit, 0.0)
  high = (jax.nn.logsumexp(jnp.stack([-a, -b, -a - b]), axis=0)
          - jax.nn.softplus(-a) - jax.nn.softplus(-b))
  low = jnp.log1p(-jnp.exp(jnp.where(near_one, -1.0, log_p)))
  return jnp.where(near_one, high, low)


def per_example(outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array]
                ) -> dict[str, jax.Array]:
  """Sigmoid cross-entropy of every task for every example, (B,) each; nothing masked.
  A model of CTR-only data has no cvr logit: ctr alone."""
  ctr = optax.sigmoid_binary_cross_entropy(outputs["ctr_logit"], batch["click"])
  if "cvr_logit" not in outputs:
    return {"ctr": ctr}
  ctr_logit, cvr_logit = outputs["ctr_logit"], outputs["cvr_logit"]
  conversion = batch["conversion"]
  # log p(click & conversion) = log sigmoid(a) + log sigmoid(b), never forming the product.
  log_p = jax.nn.log_sigmoid(ctr_logit) + jax.nn.log_sigmoid(cvr_logit)
  return {
      "ctr": ctr,
      "cvr": optax.sigmoid_binary_cross_entropy(cvr_logit, conversion),
      "ctcvr": -(conversion * log_p
                 + (1.0 - conversion) * log_not_both(ctr_logit, cvr_logit, log_p)),
  }


def masks(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Which examples each task's loss is over: CVR is only defined on clicked impressions."""
  ones = jnp.ones_like(batch["click"])
  return {"ctr": ones, "cvr": batch["click"], "ctcvr": ones}


def combine(outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array], spec: str,
            weights: Mapping[str, float] | None = None, axis_name: str | None = None
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Total loss of `spec` and the masked mean loss of every task (for logging).

  Each task's loss is the mean over its masked examples (0 when a batch has none), and the
  total is the weighted sum of the tasks in `spec` (weights default to 1).

  axis_name: inside a map over devices (pmap) that splits the batch, each device divides
  its own sum by the masked count of the whole batch, so that the psum of the devices'
  losses (and of their gradients) is the loss of the whole batch. A mean of the devices'
  means would differ whenever the devices hold different numbers of clicks.
  """
  terms = parse_loss(spec)
  losses = per_example(outputs, batch)
  task_means = {}
  task_masks = masks(batch)
  for task in losses:
    mask = task_masks[task]
    count = mask.sum() if axis_name is None else jax.lax.psum(mask.sum(), axis_name)
    task_means[task] = (losses[task] * mask).sum() / jnp.maximum(count, 1.0)
  weights = weights or {}
  total = sum(weights.get(t, 1.0) * task_means[t] for t in terms)
  return total, task_means
