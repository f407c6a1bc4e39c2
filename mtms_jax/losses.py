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

TASKS = ("ctr", "cvr", "ctcvr")


def parse_loss(spec: str) -> tuple[str, ...]:
  terms = tuple(t.strip() for t in spec.split("+"))
  unknown = [t for t in terms if t not in TASKS]
  if unknown or len(set(terms)) != len(terms):
    raise ValueError(f"loss {spec!r}: expected distinct '+'-joined terms from {TASKS}")
  return terms


def log1mexp(x: jax.Array) -> jax.Array:
  """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler 2012)."""
  x = jnp.minimum(x, -1e-30)
  return jnp.where(x > -jnp.log(2.0), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


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
      "ctcvr": -(conversion * log_p + (1.0 - conversion) * log1mexp(log_p)),
  }


def masks(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Which examples each task's loss is over: CVR is only defined on clicked impressions."""
  ones = jnp.ones_like(batch["click"])
  return {"ctr": ones, "cvr": batch["click"], "ctcvr": ones}


def combine(outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array], spec: str,
            weights: Mapping[str, float] | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Total loss of `spec` and the masked mean loss of every task (for logging).

  Each task's loss is the mean over its masked examples (0 when a batch has none), and the
  total is the weighted sum of the tasks in `spec` (weights default to 1).
  """
  terms = parse_loss(spec)
  losses = per_example(outputs, batch)
  task_means = {}
  for task in losses:
    mask = masks(batch)[task]
    task_means[task] = (losses[task] * mask).sum() / jnp.maximum(mask.sum(), 1.0)
  weights = weights or {}
  total = sum(weights.get(t, 1.0) * task_means[t] for t in terms)
  return total, task_means
