"""Synthetic logs whose regime is set by knobs: the conditions the paper makes its claims for.

The process is that of `mtms_jax.data.synthetic` (users and ads with group-structured latent
interests, p(click) from their inner product plus biases, context and dense effects, a
conversion head that is related to the click one but not a copy), with every scene-level
effect a mix of one part all scenes share and one part the scene's own:

  effect_s = sqrt(scene_similarity) * shared + sqrt(1 - scene_similarity) * own_s

so two scenes' effects correlate by `scene_similarity`. The knobs, and what 0 and 1 mean:
  scene_similarity  how alike the scenes' label effects are: user and ad latents, context and
      dense effects, conversion heads, scene offsets. 0: unrelated; 1: identical (the scene
      then does not change any row's true probabilities).
  id_shift          how differently ids are popular per scene: 0: the same popularity in every
      scene; 1: each scene's popularity drawn on its own.
  id_overlap        the share of users and of ads seen in every scene; the others are seen in
      one scene only. 1: every scene sees every id; 0: the scenes' id sets are disjoint.
  popularity_skew   sigma of the lognormal id popularity: 0: uniform; 1: a long tail, where
      few ads have enough conversions to learn from.
  conversion_rate   conversions per click (p(conversion | click) averaged over clicks).
  cvr_strength      how much the ids say about conversion: 0: p(conversion | click) depends on
      the scene only (nothing to learn per id); 1: as in `mtms_jax.data.synthetic` (the
      conversion head's inner product as strong as the click one, `alpha`); 2: twice that.
  num_scenes, scene_size_exponent   scene s gets a share of rows proportional to
      (s + 1) ** -scene_size_exponent (a Zipf law; 0: equal sizes).
  history_days      extra days before the `num_days` window, from the same process with the
      same day drift: days 0..history_days-1 are history, the window follows them.

Memory grows as (scenes x ids x latent_dim), never (scenes x ids x dim x dim): 100 scenes of
1000 users are a few MB. `truth` holds p(click) and p(conversion | click) of every row.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from mtms_jax import errors
from mtms_jax.data import Dataset, synthetic


def load(num_scenes: int = 2,
         scene_size_exponent: float = 1.0,
         scene_similarity: float = 0.5,
         id_shift: float = 0.0,
         id_overlap: float = 1.0,
         popularity_skew: float = 1.0,
         conversion_rate: float = 0.1,
         cvr_strength: float = 1.0,
         click_rate: float = 0.1,
         alpha: float = 1.5,
         num_days: int = 4,
         history_days: int = 0,
         rows_per_day: int = 100_000,
         num_users: int = 1000,
         num_ads: int = 300,
         num_user_groups: int = 20,
         num_ad_groups: int = 20,
         num_contexts: int = 8,
         latent_dim: int = 8,
         individual_scale: float = 0.4,
         day_drift: float = 0.1,
         embedding_dim: int = 8,
         seed: int = 0) -> Dataset:
  """`(history_days + num_days) * rows_per_day` rows; see the module docstring."""
  check_kwargs(num_scenes=num_scenes, scene_similarity=scene_similarity, id_shift=id_shift,
               id_overlap=id_overlap, popularity_skew=popularity_skew,
               cvr_strength=cvr_strength, history_days=history_days, num_days=num_days,
               num_users=num_users, num_ads=num_ads)
  rng = np.random.default_rng(seed)
  days = history_days + num_days
  n = days * rows_per_day
  scene = rng.choice(num_scenes, size=n, p=scene_shares(num_scenes, scene_size_exponent))
  user_popularity = _popularity(rng, num_scenes, num_users, id_shift, id_overlap,
                                popularity_skew)
  ad_popularity = _popularity(rng, num_scenes, num_ads, id_shift, id_overlap, popularity_skew)
  rows = {"day": np.repeat(np.arange(days), rows_per_day), "scene": scene,
          "user": _choice_per_scene(rng, scene, user_popularity),
          "ad": _choice_per_scene(rng, scene, ad_popularity),
          "context": rng.integers(0, num_contexts, size=n),
          "dense": rng.standard_normal(n).astype(np.float32)}
  world = _make_world(rng, num_scenes, num_users, num_ads, num_user_groups, num_ad_groups,
                      num_contexts, latent_dim, individual_scale, scene_similarity)
  ad_bias = world["ad_bias"][None, :] + day_drift * np.cumsum(
      rng.standard_normal((days, num_ads)), axis=0)
  ctr_logit, cvr_logit = _logits(world, rows, ad_bias[rows["day"], rows["ad"]], alpha,
                                 cvr_strength)
  p_ctr = special.expit(ctr_logit + synthetic.bias_for_rate(ctr_logit, click_rate))
  # conversion_rate is p(conversion | click): the rate over rows weighted by p(click).
  p_cvr = special.expit(cvr_logit + synthetic.bias_for_rate(cvr_logit, conversion_rate,
                                                            weights=p_ctr))
  return synthetic.labelled_rows(rng, rows, world, p_ctr, p_cvr, num_scenes, num_contexts,
                                 embedding_dim, name="regimes")


def check_kwargs(num_scenes, scene_similarity, id_shift, id_overlap, popularity_skew,
                 cvr_strength, history_days, num_days, num_users, num_ads, **unchecked):
  """UserError for a knob out of its range; config_checks calls it before any data load."""
  del unchecked           # load's other arguments: any value of their type is fine
  similarity, skew = scene_similarity, popularity_skew
  key = "config.data.kwargs."
  errors.expect(num_scenes >= 1, key + "num_scenes", num_scenes, ">= 1")
  for name, value in (("scene_similarity", similarity), ("id_shift", id_shift),
                      ("id_overlap", id_overlap)):
    errors.expect(0 <= value <= 1, key + name, value, "in [0, 1]")
  errors.expect(skew >= 0, key + "popularity_skew", skew, ">= 0")
  errors.expect(cvr_strength >= 0, key + "cvr_strength", cvr_strength, ">= 0")
  errors.expect(history_days >= 0, key + "history_days", history_days, ">= 0")
  errors.expect(num_days >= 1, key + "num_days", num_days, ">= 1")
  for name, size in (("num_users", num_users), ("num_ads", num_ads)):
    # Every scene must see some id: the shared ones, or one of its own at least.
    errors.expect(round(id_overlap * size) > 0 or size >= num_scenes, key + name, size,
                  f">= num_scenes ({num_scenes}) when id_overlap is 0")


def scene_shares(num_scenes: int, exponent: float) -> np.ndarray:
  """Each scene's share of rows, proportional to (s + 1) ** -exponent (Zipf)."""
  weights = np.arange(1, num_scenes + 1, dtype=np.float64) ** -float(exponent)
  return weights / weights.sum()


def _mix(similarity, shared, own):
  """Scene effects `own` (S, ...) correlated by `similarity` through the common `shared`."""
  return np.sqrt(similarity) * shared[None] + np.sqrt(1 - similarity) * own


def _popularity(rng, num_scenes, size, id_shift, id_overlap, skew):
  """(S, size) row probabilities of each id in each scene."""
  log_weight = _mix(1 - id_shift, rng.standard_normal(size),
                    rng.standard_normal((num_scenes, size)))
  order = rng.permutation(size)
  num_shared = round(id_overlap * size)
  seen = np.zeros((num_scenes, size), bool)
  seen[:, order[:num_shared]] = True
  own = order[num_shared:]
  seen[np.arange(len(own)) % num_scenes, own] = True       # each id to one scene, in turn
  weight = np.where(seen, np.exp(skew * log_weight), 0.0)
  return weight / weight.sum(axis=1, keepdims=True)


def _choice_per_scene(rng, scene, popularity):
  """An id per row, drawn from its scene's popularity (inverse CDF: one search per row)."""
  cdf = np.cumsum(popularity, axis=1)
  cdf[:, -1] = 1.0
  u = rng.random(len(scene))
  ids = np.empty(len(scene), np.int64)
  for s in np.unique(scene):
    rows = scene == s
    ids[rows] = np.searchsorted(cdf[s], u[rows], side="right")
  return np.minimum(ids, popularity.shape[1] - 1)


def _make_world(rng, num_scenes, num_users, num_ads, num_user_groups, num_ad_groups,
                num_contexts, k, individual_scale, similarity):
  user_group = rng.integers(0, num_user_groups, size=num_users)
  ad_group = rng.integers(0, num_ad_groups, size=num_ads)
  latent = synthetic.group_latents(rng, k, individual_scale)

  def per_scene(shared, own):
    return _mix(similarity, shared, own)

  normal = rng.standard_normal
  user = per_scene(latent(user_group, num_user_groups),
                   latent(user_group, num_user_groups, num_scenes))           # (S, U, k)
  cvr_mix = per_scene(normal((k, k)), normal((num_scenes, k, k))) / np.sqrt(k)  # M_s
  return {
      "user_group": user_group,
      "ad_group": ad_group,
      "num_user_groups": num_user_groups,
      "num_ad_groups": num_ad_groups,
      "user": user,
      "ad": per_scene(latent(ad_group, num_ad_groups),
                      latent(ad_group, num_ad_groups, num_scenes)),            # (S, A, k)
      "ad_cvr": per_scene(latent(ad_group, num_ad_groups),
                          latent(ad_group, num_ad_groups, num_scenes)),
      "user_cvr": np.einsum("suk,skj->suj", user, cvr_mix),                    # (S, U, k)
      "user_bias": 0.5 * normal(num_users),
      "ad_bias": 0.5 * normal(num_ads),
      "user_cvr_bias": 0.5 * per_scene(normal(num_users), normal((num_scenes, num_users))),
      "context": 0.5 * per_scene(normal(num_contexts), normal((num_scenes, num_contexts))),
      "dense": 0.3 * per_scene(normal(()), normal(num_scenes)),
      # Scene offsets: zero when the scenes are identical, else the scene's own.
      "ctr_offset": 0.5 * per_scene(np.zeros(()), normal(num_scenes)),
      "cvr_offset": 0.5 * per_scene(np.zeros(()), normal(num_scenes)),
  }


def _logits(world, rows, ad_bias, alpha, cvr_strength):
  """Click and conversion logits of `rows` (before the rate-matching shift)."""
  s, u, a = rows["scene"], rows["user"], rows["ad"]
  k = world["user"].shape[-1]
  ctr = (world["ctr_offset"][s]
         + alpha * np.einsum("nk,nk->n", world["user"][s, u], world["ad"][s, a]) / np.sqrt(k)
         + world["user_bias"][u] + ad_bias + world["context"][s, rows["context"]]
         + world["dense"][s] * rows["dense"])
  ad_cvr = 0.5 * world["ad"][s, a] + 0.5 * world["ad_cvr"][s, a]
  cvr_ids = (alpha * np.einsum("nk,nk->n", world["user_cvr"][s, u], ad_cvr) / np.sqrt(k)
             + world["user_cvr_bias"][s, u] + 0.5 * ad_bias)
  return ctr, world["cvr_offset"][s] + cvr_strength * cvr_ids
