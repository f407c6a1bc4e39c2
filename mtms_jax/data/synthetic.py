"""Synthetic multi-scene click/conversion logs with known true probabilities.

The generating process, chosen so that the paper's two claims can show up:
- Users and ads share one id space across scenes, and each has a latent interest vector
  built from a group centre plus an individual part. The part of a user's interest that all
  scenes share (weight 1 - scene_shift) is what cross-scene embeddings can transfer.
- Each scene mixes in its own user latent (weight scene_shift), has its own bias, its own
  effect of the context field, and its own conversion head: sharing every embedding across
  scenes and tasks has to compromise between them.
- p(click) = sigmoid(b_s + alpha * <u_s, a> + user bias + ad bias + context_s + beta * dense).
  p(conversion | click) = sigmoid(c_s + alpha_cvr * <M u_s, w> + ...), with w an ad latent that
  is only partly the click one, so CVR is related to CTR but not a copy of it.
- Biases b_s, c_s are solved so the mean rates hit `click_rate` and `conversion_rate`.
- Ad biases drift from day to day, so yesterday's embeddings are a good but not perfect start.

`truth` holds p(click) and p(conversion | click) of every row: the oracle's metrics are the
ceiling a model can reach on this data.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

from mtms_jax.data import Dataset, as_columns
from mtms_jax.errors import UserError
from mtms_jax.schema import DenseField, FeatureSchema, SparseField


def load(num_scenes: int = 2,
         scene_weights: tuple[float, ...] | None = None,
         num_days: int = 4,
         rows_per_day: int = 100_000,
         num_users: int = 1000,
         num_ads: int = 300,
         num_user_groups: int = 20,
         num_ad_groups: int = 20,
         num_contexts: int = 8,
         latent_dim: int = 8,
         individual_scale: float = 0.4,
         scene_shift: float = 0.5,
         alpha: float = 1.5,
         alpha_cvr: float = 1.5,
         click_rate: float = 0.1,
         conversion_rate: float = 0.1,
         day_drift: float = 0.1,
         embedding_dim: int = 8,
         seed: int = 0) -> Dataset:
  """Generates `num_days * rows_per_day` rows; see the module docstring for the process."""
  if scene_weights is None:
    scene_weights = _default_scene_weights(num_scenes)
  if len(scene_weights) != num_scenes:
    raise UserError(f"scene_weights has {len(scene_weights)} entries for {num_scenes} scenes")
  rng = np.random.default_rng(seed)
  world = _make_world(rng, num_scenes, num_users, num_ads, num_user_groups, num_ad_groups,
                      num_contexts, latent_dim, individual_scale, scene_shift)
  n = num_days * rows_per_day
  rows = {
      "day": np.repeat(np.arange(num_days), rows_per_day),
      "scene": rng.choice(num_scenes, size=n, p=np.asarray(scene_weights) / sum(scene_weights)),
      # Popularity skew: some users and ads are seen far more than others.
      "user": _skewed_choice(rng, num_users, n),
      "ad": _skewed_choice(rng, num_ads, n),
      "context": rng.integers(0, num_contexts, size=n),
      "dense": rng.standard_normal(n).astype(np.float32),
  }
  ad_bias = world["ad_bias"][None, :] + day_drift * np.cumsum(
      rng.standard_normal((num_days, num_ads)), axis=0)
  ctr_logit, cvr_logit = _logits(world, rows, ad_bias[rows["day"], rows["ad"]], alpha, alpha_cvr)
  ctr_logit += bias_for_rate(ctr_logit, click_rate)
  p_ctr = special.expit(ctr_logit)
  # conversion_rate is p(conversion | click): average over rows weighted by p(click).
  cvr_logit += bias_for_rate(cvr_logit, conversion_rate, weights=p_ctr)
  p_cvr = special.expit(cvr_logit)
  return labelled_rows(rng, rows, world, p_ctr, p_cvr, num_scenes, num_contexts, embedding_dim,
                       name="synthetic")


def labelled_rows(rng, rows, world, p_ctr, p_cvr, num_scenes, num_contexts, embedding_dim,
                  name):
  """The Dataset of `rows` (user, ad, context, dense, scene, day), labels drawn from the
  true probabilities: the columns and schema this module and mtms_jax/data/regimes.py share."""
  click = rng.random(len(p_ctr)) < p_ctr
  conversion = click & (rng.random(len(p_ctr)) < p_cvr)
  user_group, ad_group = world["user_group"], world["ad_group"]
  schema = FeatureSchema(
      sparse=(SparseField("user", len(user_group), embedding_dim),
              SparseField("ad", len(ad_group), embedding_dim),
              SparseField("user_group", int(world["num_user_groups"]), embedding_dim),
              SparseField("ad_group", int(world["num_ad_groups"]), embedding_dim),
              SparseField("context", num_contexts, embedding_dim)),
      dense=(DenseField("dense0"),),
      scenes=tuple(f"scene{s}" for s in range(num_scenes)))
  ids = np.stack([rows["user"], rows["ad"], user_group[rows["user"]], ad_group[rows["ad"]],
                  rows["context"]], axis=1)
  columns = as_columns({"ids": ids, "dense": rows["dense"][:, None], "scene": rows["scene"],
                        "click": click, "conversion": conversion, "day": rows["day"]})
  return Dataset(columns, schema, truth={"ctr": p_ctr, "cvr": p_cvr}, name=name)


def _default_scene_weights(num_scenes):
  """1 : 0.6 : 0.36 ...: about 60/40 for two scenes, a few big scenes and a long tail for many."""
  return tuple(0.6 ** np.arange(num_scenes))


def _make_world(rng, num_scenes, num_users, num_ads, num_user_groups, num_ad_groups,
                num_contexts, k, individual_scale, scene_shift):
  user_group = rng.integers(0, num_user_groups, size=num_users)
  ad_group = rng.integers(0, num_ad_groups, size=num_ads)
  latent = group_latents(rng, k, individual_scale)
  shared_user = latent(user_group, num_user_groups)                    # (U, k)
  scene_user = latent(user_group, num_user_groups, num_scenes)         # (S, U, k)
  return {
      "user_group": user_group,
      "ad_group": ad_group,
      "num_user_groups": num_user_groups,
      "num_ad_groups": num_ad_groups,
      "user": np.sqrt(1 - scene_shift) * shared_user + np.sqrt(scene_shift) * scene_user,
      "ad": latent(ad_group, num_ad_groups),
      "ad_cvr": latent(ad_group, num_ad_groups),
      "cvr_mix": rng.standard_normal((num_scenes, k, k)) / np.sqrt(k),   # M_s
      "user_bias": 0.5 * rng.standard_normal(num_users),
      "ad_bias": 0.5 * rng.standard_normal(num_ads),
      "user_cvr_bias": 0.5 * rng.standard_normal((num_scenes, num_users)),
      "context": 0.5 * rng.standard_normal((num_scenes, num_contexts)),
      "dense": rng.standard_normal(num_scenes) * 0.3,
  }


def group_latents(rng, k, individual_scale):
  """latent(groups, num_groups, *lead): (*lead, len(groups), k) interests, each a group
  centre plus `individual_scale` of the id's own part."""
  def latent(groups, num_groups, *lead):
    centres = rng.standard_normal(lead + (num_groups, k))
    return centres[..., groups, :] + individual_scale * rng.standard_normal(
        lead + (len(groups), k))
  return latent


def _logits(world, rows, ad_bias, alpha, alpha_cvr):
  s, u, a = rows["scene"], rows["user"], rows["ad"]
  user = world["user"][s, u]                                              # (N, k)
  k = user.shape[-1]
  ctr = (alpha * np.einsum("nk,nk->n", user, world["ad"][a]) / np.sqrt(k)
         + world["user_bias"][u] + ad_bias + world["context"][s, rows["context"]]
         + world["dense"][s] * rows["dense"])
  # M_s applied per (scene, user) before indexing rows: an (N, k, k) gather would take GBs.
  user_cvr = np.einsum("suk,skj->suj", world["user"], world["cvr_mix"])[s, u]
  ad_cvr = 0.5 * world["ad"][a] + 0.5 * world["ad_cvr"][a]
  cvr = (alpha_cvr * np.einsum("nk,nk->n", user_cvr, ad_cvr) / np.sqrt(k)
         + world["user_cvr_bias"][s, u] + 0.5 * ad_bias)
  return ctr, cvr


def bias_for_rate(logits, rate, weights=None):
  """The shift b with the (weighted) mean of sigmoid(logits + b) equal to rate."""
  if not 0 < rate < 1:
    raise UserError(f"rates must lie in (0, 1), got {rate}")
  return optimize.brentq(
      lambda b: np.average(special.expit(logits + b), weights=weights) - rate, -50, 50)


def _skewed_choice(rng, size, n):
  weights = rng.lognormal(0.0, 1.0, size)
  return rng.choice(size, size=n, p=weights / weights.sum())
