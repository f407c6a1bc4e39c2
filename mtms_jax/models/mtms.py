"""MTMS: the multi-task, multi-scene unified ranking model (Tan et al., Fig. 1 and 2).

Notation: B batch, S scenes, T = 2 tasks (ctr, cvr), C components, F fields, W = width of one
component's concatenated field embeddings (sum of dims over fields), Nd dense features.

Components (config.sharing):
  'none'   C = S * T: every (scene, task) has its own tables (the paper's non-shared design).
  'tasks'  C = S: CTR and CVR of a scene share tables (the paper's "shared embedding" rows).
  'all'    C = 1: one table set for every scene and task.

Phase 'embedding' (Fig. 2b) trains params['embedding'] = tables + small towers. Each example
looks up the two components of its own scene, (B, 2, F, D); the CTR tower of (scene, ctr)
reads the ctr component, the CVR tower of (scene, cvr) the cvr component. Nothing crosses
scenes or tasks except through the CTCVR = CTR x CVR loss.

Phase 'ranking' (Fig. 2c) trains params['ranking'] with the embeddings frozen. Each example
looks up its ids in every component (B, C, F, D), the C component vectors are aggregated
(config.aggregation: 'concat' -> C*W features, 'mean' -> W features, bounded in C), and an
upper network shared across scenes, with one output head per scene, predicts CTR and CVR.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mtms_jax import embedding
from mtms_jax.models.layers import MLP, SceneMLP
from mtms_jax.schema import FeatureSchema

TASKS = ("ctr", "cvr")
SHARING = ("none", "tasks", "all")
AGGREGATIONS = ("concat", "mean")


class Towers(nn.Module):
  """Per-(scene, task) towers of the embedding phase."""
  num_scenes: int
  hidden: tuple[int, ...]

  @nn.compact
  def __call__(self, x_ctr, x_cvr, scene):
    features = tuple(self.hidden) + (1,)
    ctr = SceneMLP(self.num_scenes, features, name="ctr")(x_ctr, scene)
    cvr = SceneMLP(self.num_scenes, features, name="cvr")(x_cvr, scene)
    return ctr[:, 0], cvr[:, 0]


class RankingNetwork(nn.Module):
  """Upper network over aggregated embeddings: shared MLP, one (ctr, cvr) head per scene."""
  num_scenes: int
  hidden: tuple[int, ...]

  @nn.compact
  def __call__(self, x, scene):
    x = nn.relu(MLP(tuple(self.hidden), name="mlp")(x))
    logits = SceneMLP(self.num_scenes, (len(TASKS),), name="head")(x, scene)
    return logits[:, 0], logits[:, 1]


class Model:
  """See the module docstring. config: sharing, tower_hidden, ranking_hidden, aggregation."""

  phases = {"embedding": ("embedding",), "ranking": ("ranking",)}
  eval_phase = "ranking"

  def __init__(self, schema: FeatureSchema, config: ml_collections.ConfigDict):
    if config.sharing not in SHARING:
      raise ValueError(f"config.model.sharing={config.sharing!r}; expected one of {SHARING}")
    if config.aggregation not in AGGREGATIONS:
      raise ValueError(f"config.model.aggregation={config.aggregation!r}; expected one of "
                       f"{AGGREGATIONS}")
    self.schema = schema
    self.config = config
    self.num_scenes = schema.num_scenes
    num_components = {"none": self.num_scenes * len(TASKS), "tasks": self.num_scenes,
                      "all": 1}[config.sharing]
    self.layout = embedding.make_layout(schema, num_components)
    self.towers = Towers(self.num_scenes, tuple(config.tower_hidden))
    self.ranker = RankingNetwork(self.num_scenes, tuple(config.ranking_hidden))

  def component(self, scene: jax.Array, task: int) -> jax.Array:
    """Component owning the tables of (scene, task)."""
    if self.config.sharing == "none":
      return scene * len(TASKS) + task
    if self.config.sharing == "tasks":
      return scene
    return jnp.zeros_like(scene)

  def components(self, scene: jax.Array, phase: str) -> jax.Array:
    if phase == "embedding":
      return jnp.stack([self.component(scene, t) for t in range(len(TASKS))], axis=1)
    num = self.layout.num_components
    return jnp.broadcast_to(jnp.arange(num, dtype=jnp.int32), (scene.shape[0], num))

  def init(self, rng: jax.Array) -> dict:
    rng_tables, rng_towers, rng_ranker = jax.random.split(rng, 3)
    b = 1
    scene = jnp.zeros((b,), jnp.int32)
    x_tower = jnp.zeros((b, self._tower_width))
    x_rank = jnp.zeros((b, self._ranking_width))
    return {
        "embedding": {
            "tables": embedding.init_tables(rng_tables, self.layout),
            "towers": self.towers.init(rng_towers, x_tower, x_tower, scene)["params"],
        },
        "ranking": self.ranker.init(rng_ranker, x_rank, scene)["params"],
    }

  @property
  def _tower_width(self) -> int:
    return self.layout.width + self.schema.num_dense

  @property
  def _ranking_width(self) -> int:
    k = self.layout.num_components if self.config.aggregation == "concat" else 1
    return k * self.layout.width + self.schema.num_dense + self.num_scenes

  def apply(self, params, rows, batch, phase: str) -> dict[str, jax.Array]:
    x = embedding.flatten_rows(rows)                                         # (B, K, W)
    scene = batch["scene"]
    if phase == "embedding":
      inputs = [jnp.concatenate([x[:, t], batch["dense"]], axis=-1) for t in range(len(TASKS))]
      ctr, cvr = self.towers.apply({"params": params["embedding"]["towers"]}, *inputs, scene)
    elif phase == "ranking":
      if self.config.aggregation == "concat":
        agg = x.reshape(x.shape[0], -1)                                     # (B, C * W)
      else:
        agg = x.mean(axis=1)                                                # (B, W)
      scene_one_hot = jax.nn.one_hot(scene, self.num_scenes, dtype=x.dtype)
      inputs = jnp.concatenate([agg, batch["dense"], scene_one_hot], axis=-1)
      ctr, cvr = self.ranker.apply({"params": params["ranking"]}, inputs, scene)
    else:
      raise ValueError(f"phase {phase!r}; MTMS has phases {tuple(self.phases)}")
    return {"ctr_logit": ctr, "cvr_logit": cvr}
