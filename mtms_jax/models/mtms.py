"""MTMS: the multi-task, multi-scene unified ranking model (Tan et al., Fig. 1 and 2).

Notation: B batch, S scenes, T tasks (ctr, cvr; ctr alone on CTR-only data), C components,
F fields, W = width of one component's concatenated field embeddings (sum of dims over
fields), Nd dense features.

Components (config.sharing):
  'none'   C = S * T: every (scene, task) has its own tables (the paper's non-shared design).
  'tasks'  C = S: CTR and CVR of a scene share tables (the paper's "shared embedding" rows).
  'all'    C = 1: one table set for every scene and task.

Phase 'embedding' (Fig. 2b) trains params['embedding'] = tables + small towers. Each example
looks up the two components of its own scene, (B, 2, F, D); the CTR tower of (scene, ctr)
reads the ctr component, the CVR tower of (scene, cvr) the cvr component. Nothing crosses
scenes or tasks except through the CTCVR = CTR x CVR loss.

Phase 'ranking' (Fig. 2c) trains params['ranking'] with the embeddings frozen. Each example
looks up its ids in K source components (B, K, F, D), the K component vectors are aggregated
(config.aggregation: 'concat' -> K*W features, 'mean' -> W features), and an upper network
shared across scenes, with a learned input bias and an output head per scene, predicts CTR
and CVR (config.ranking_head 'scene'; 'shared': one head for every scene). The sources
(config.ranking_scenes):
  ()            every component, K = C: the paper's design; per-example cost grows with C.
  (s1, s2, ...) the example's own scene's components, then those of scenes s1, s2, ... in
                that order (the own scene's twice if it is listed): K = (1 + len) * C / S,
                the same for every number of scenes. E.g. the few largest scenes, whose
                embeddings are trained on the most data.
Per example, nothing else grows with S either: the scene bias and the head are gathered
(or, for a few scenes, computed for all scenes at once; see layers.SceneMLP).

With config.ranking_residual, the ranking network's logits, from a head that starts at 0,
are added to the frozen embedding-phase towers' logits on the example's own components:
the phase starts exactly at the towers' predictions and, with early stopping restoring its
best parameters, ends no worse than them on the validation rows. Why: the ranking phase
reads embeddings frozen after training on the same rows, whose fit to those rows'
labels does not carry over to new rows; a network learned from scratch on them can end
below the towers it aggregates (measured on the bench-shaped workload, `make quality`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mtms_jax import embedding, errors, tasks
from mtms_jax.errors import UserError
from mtms_jax.models import layers
from mtms_jax.models.layers import MLP, ROUTES, Dense, SceneMLP
from mtms_jax.schema import FeatureSchema

SHARING = ("none", "tasks", "all")
AGGREGATIONS = ("concat", "mean")
RANKING_HEADS = ("scene", "shared")


class Towers(nn.Module):
  """Per-(scene, task) towers of the embedding phase: one input and one logit per task;
  hidden: each task's hidden widths; route: SceneMLP's."""
  num_scenes: int
  hidden: tuple[tuple[int, ...], ...]
  tasks: tuple[str, ...]
  route: str = "auto"

  @nn.compact
  def __call__(self, *inputs_and_scene):
    *inputs, scene = inputs_and_scene
    return tuple(SceneMLP(self.num_scenes, tuple(hidden) + (1,), route=self.route,
                          name=task)(x, scene)[:, 0]
                 for task, hidden, x in zip(self.tasks, self.hidden, inputs))


class RankingNetwork(nn.Module):
  """Upper network over aggregated embeddings: shared MLP, then a head (a logit per task),
  one per scene or one shared by every scene (`scene_head`).

  The scene enters as a learned bias of the first layer, gathered per example: the same
  function as a one-hot scene input, without S input columns. A shared head learns from
  every scene's rows; a scene's own head only from that scene's, few for the small scenes
  of long-tailed sizes. With `residual`, the heads
  start at 0 and their logits are added to the example's own embedding-phase tower logits
  (`base`): the phase starts from the towers' predictions and learns what aggregating every
  component adds to them.
  """
  num_scenes: int
  hidden: tuple[int, ...]
  num_tasks: int
  residual: bool = False
  route: str = "auto"
  scene_head: bool = True         # one head per scene, else one head for every scene

  @nn.compact
  def __call__(self, x, scene, base=None):
    scene_bias = self.param("scene_bias", nn.initializers.zeros,
                            (self.num_scenes, self.hidden[0]))
    x = nn.relu(Dense(self.hidden[0], name="input")(x) + scene_bias[scene])
    if len(self.hidden) > 1:
      x = nn.relu(MLP(tuple(self.hidden[1:]), name="mlp")(x))
    if self.scene_head:
      logits = SceneMLP(self.num_scenes, (self.num_tasks,), zero_last=self.residual,
                        route=self.route, name="head")(x, scene)
    else:
      init = nn.initializers.zeros if self.residual else nn.initializers.lecun_normal()
      logits = nn.Dense(self.num_tasks, kernel_init=init, name="head")(x)
    if self.residual:
      logits = base + logits
    return tuple(logits[:, t] for t in range(self.num_tasks))


class Model:
  """See the module docstring. config: sharing, tower_hidden, cvr_tower_hidden (optional,
  default None: the CVR towers' own widths, else tower_hidden's), ranking_hidden, aggregation,
  ranking_scenes (optional, default ()), ranking_residual (optional, default False),
  ranking_head (optional, default 'scene': one head per scene; 'shared': one for all),
  scene_route (optional, default 'auto': how examples meet their scene's weights, one of
  layers.ROUTES)."""

  phases = {"embedding": ("embedding",), "ranking": ("ranking",)}
  eval_phase = "ranking"

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict, where: str = "config.model") -> None:
    """Raises UserError naming the first wrong field of `config` (`where`: its key); the
    ranking scenes' upper bound is the data's number of scenes, checked in `__init__`."""
    errors.expect_choice(f"{where}.sharing", config.sharing, SHARING)
    errors.expect_choice(f"{where}.aggregation", config.aggregation, AGGREGATIONS)
    errors.expect_choice(f"{where}.ranking_head", config.get("ranking_head", "scene"),
                         RANKING_HEADS)
    errors.expect_choice(f"{where}.scene_route", config.get("scene_route", "auto"), ROUTES)
    layers.check_widths(config, where, "tower_hidden", "ranking_hidden",
                        allow_empty=("tower_hidden",))
    if config.get("cvr_tower_hidden") is not None:
      layers.check_widths(config, where, "cvr_tower_hidden", allow_empty=("cvr_tower_hidden",))
    scenes = tuple(config.get("ranking_scenes", ()))
    errors.expect(all(s >= 0 for s in scenes), f"{where}.ranking_scenes", scenes,
                  "scene indices >= 0")

  def __init__(self, schema: FeatureSchema, config: ml_collections.ConfigDict):
    self.check_config(config)
    self.schema = schema
    self.config = config
    self.tasks = schema.tasks          # CTR-only data: no CVR tables, towers or heads
    self.num_scenes = schema.num_scenes
    self.ranking_scenes = tuple(config.get("ranking_scenes", ()))
    errors.expect(all(s < self.num_scenes for s in self.ranking_scenes),
                  "config.model.ranking_scenes", self.ranking_scenes,
                  f"scene indices in [0, {self.num_scenes})")
    num_components = {"none": self.num_scenes * len(self.tasks), "tasks": self.num_scenes,
                      "all": 1}[config.sharing]
    self.layout = embedding.make_layout(schema, num_components)
    route = config.get("scene_route", "auto")
    self.towers = Towers(self.num_scenes, tuple(self.tower_hidden(t) for t in self.tasks),
                         self.tasks, route)
    self.residual = config.get("ranking_residual", False)
    self.ranker = RankingNetwork(self.num_scenes, tuple(config.ranking_hidden), len(self.tasks),
                                 self.residual, route,
                                 config.get("ranking_head", "scene") == "scene")

  def tower_hidden(self, task: str) -> tuple[int, ...]:
    """The hidden widths of `task`'s towers: cvr_tower_hidden for CVR if set."""
    if task == tasks.CVR and self.config.get("cvr_tower_hidden") is not None:
      return tuple(self.config.cvr_tower_hidden)
    return tuple(self.config.tower_hidden)

  def component(self, scene: jax.Array, task: int) -> jax.Array:
    """Component owning the tables of (scene, task)."""
    if self.config.sharing == "none":
      return scene * len(self.tasks) + task
    if self.config.sharing == "tasks":
      return scene
    return jnp.zeros_like(scene)

  @staticmethod
  def check_scenes_apart(config: ml_collections.ConfigDict, where: str = "config.model"):
    """Raises UserError unless each scene has tables of its own, to freeze or copy alone."""
    if config.sharing == "all":
      raise UserError(f"{where}.sharing='all': every scene shares one component, so "
                      "no scene's tables can be told apart")

  def components_of_scenes(self, scenes) -> list[int]:
    """The components (table sets) the given scene indices own, sorted."""
    self.check_scenes_apart(self.config)
    return sorted({int(self.component(np.asarray(s), t)) for s in scenes
                   for t in range(len(self.tasks))})

  def scene_masks(self, embedding_params: dict, scenes) -> dict:
    """Masks over params['embedding'], True where a parameter belongs to one of `scenes`
    (`component_masks` of their components)."""
    selected = np.isin(np.arange(self.layout.num_components), self.components_of_scenes(scenes))
    return self.component_masks(embedding_params, selected)

  def component_owners(self) -> list[tuple[int | None, tuple[str, ...]]]:
    """(scene index, its tasks) of each component: one task with sharing 'none', the
    scene's tasks with 'tasks'; with 'all' the one component serves every scene (None)."""
    if self.config.sharing == "all":
      return [(None, tuple(self.tasks))]
    owners = {}
    for s in range(self.num_scenes):
      for t, task in enumerate(self.tasks):
        owners.setdefault(int(self.component(np.asarray(s), t)), (s, []))[1].append(task)
    return [(s, tuple(tasks)) for s, tasks in (owners[c] for c in sorted(owners))]

  def component_masks(self, embedding_params: dict, selected) -> dict:
    """Masks over params['embedding'], True where a parameter belongs to a component that
    `selected` ((C,) bools, numpy or traced) marks: its table rows ((rows, 1) per table)
    and its towers' slices (every tower leaf is stacked over scenes, SceneMLP; the tower of
    task t in scene s belongs to component (s, t)). Broadcast against the leaves."""
    selected = jnp.asarray(selected)
    num = self.layout.num_components
    tables = {k: selected[jnp.arange(t.shape[0]) % num][:, None]
              for k, t in embedding_params["tables"].items()}
    scenes = jnp.arange(self.num_scenes)

    def tower_masks(t: int, tower: dict) -> dict:
      owned = selected[self.component(scenes, t)]                 # (S,)
      return jax.tree.map(lambda leaf: owned.reshape((-1,) + (1,) * (leaf.ndim - 1)), tower)

    towers = {task: tower_masks(t, embedding_params["towers"][task])
              for t, task in enumerate(self.tasks)}
    return {"tables": tables, "towers": towers}

  def embedding_from(self, old_model: Model, old: dict, new: dict, scenes: dict) -> dict:
    """`new` params['embedding'] of this model with `old_model`'s scenes copied in:
    scenes = {old scene index: this model's index}. Each (scene, task) component's table
    rows and the scene's tower slices are copied; other scenes keep `new`'s."""
    pairs = [(int(old_model.component(np.asarray(s_old), t)),
              int(self.component(np.asarray(s_new), t)))
             for s_old, s_new in scenes.items() for t in range(len(self.tasks))]
    source, target = (np.array(x) for x in zip(*pairs))
    c_old, c_new = old_model.layout.num_components, self.layout.num_components

    def copy_components(o, n):
      # Rows are (field_offset + id) * C + component: a (V, C, D) view per table.
      n = n.reshape(-1, c_new, n.shape[-1]).at[:, target].set(
          o.reshape(-1, c_old, o.shape[-1])[:, source])
      return n.reshape(-1, n.shape[-1])

    old_scenes, new_scenes = np.array(list(scenes)), np.array(list(scenes.values()))
    return {**new,
            "tables": jax.tree.map(copy_components, old["tables"], new["tables"]),
            "towers": jax.tree.map(lambda o, n: n.at[new_scenes].set(o[old_scenes]),
                                   old["towers"], new["towers"])}

  def scene_components(self, scene: jax.Array) -> jax.Array:
    """(B,) -> (B, C / S): the distinct components of each example's scene."""
    per_scene = {"none": len(self.tasks), "tasks": 1, "all": 1}[self.config.sharing]
    return jnp.stack([self.component(scene, t) for t in range(per_scene)], axis=1)

  def components(self, scene: jax.Array, phase: str) -> jax.Array:
    if phase == "embedding":
      return jnp.stack([self.component(scene, t) for t in range(len(self.tasks))], axis=1)
    if self.ranking_scenes and self.config.sharing != "all":
      sources = [scene] + [jnp.full_like(scene, s) for s in self.ranking_scenes]
      return jnp.concatenate([self.scene_components(s) for s in sources], axis=1)
    num = self.layout.num_components
    return jnp.broadcast_to(jnp.arange(num, dtype=jnp.int32), (scene.shape[0], num))

  def own_sources(self, scene: jax.Array) -> list[jax.Array]:
    """Where, among an example's K ranking-phase sources, its own (scene, ctr) and
    (scene, cvr) components are: (B,) positions, one per task."""
    if self.ranking_scenes and self.config.sharing != "all":
      per_scene = self.layout.num_components // self.num_scenes
      return [jnp.full_like(scene, min(t, per_scene - 1)) for t in range(len(self.tasks))]
    return [self.component(scene, t) for t in range(len(self.tasks))]

  @property
  def num_ranking_sources(self) -> int:
    """K, the components each example reads in the ranking phase."""
    if self.ranking_scenes and self.config.sharing != "all":
      return (1 + len(self.ranking_scenes)) * self.layout.num_components // self.num_scenes
    return self.layout.num_components

  def init(self, rng: jax.Array) -> dict:
    rng_tables, rng_networks = jax.random.split(rng)
    # Tables outside jit (init_tables fills them in place, chunk by chunk); the networks in
    # one jit, which compiles once instead of once per parameter shape.
    towers, ranking = jax.jit(self._init_networks)(rng_networks)
    return {"embedding": {"tables": embedding.init_tables(rng_tables, self.layout,
                                                 self.config.get("embedding_init_stddev", 0.05)),
                          "towers": towers},
            "ranking": ranking}

  def _init_networks(self, rng: jax.Array):
    rng_towers, rng_ranker = jax.random.split(rng)
    scene = jnp.zeros((1,), jnp.int32)
    x_tower = jnp.zeros((1, self._tower_width))
    x_rank = jnp.zeros((1, self._ranking_width))
    base = jnp.zeros((1, len(self.tasks)))
    return (self.towers.init(rng_towers, *[x_tower] * len(self.tasks), scene)["params"],
            self.ranker.init(rng_ranker, x_rank, scene, base)["params"])

  @property
  def _tower_width(self) -> int:
    return self.layout.width + self.schema.num_dense

  @property
  def _ranking_width(self) -> int:
    k = self.num_ranking_sources if self.config.aggregation == "concat" else 1
    return k * self.layout.width + self.schema.num_dense

  def apply(self, params, rows, batch, phase: str, train: bool = False,
            axis_name: str | None = None) -> dict[str, jax.Array]:
    del train, axis_name     # no batch statistics
    x = embedding.flatten_rows(rows)                                         # (B, K, W)
    scene = batch["scene"]
    if phase == "embedding":
      inputs = [jnp.concatenate([x[:, t], batch["dense"]], axis=-1) for t in range(len(self.tasks))]
      logits = self.towers.apply({"params": params["embedding"]["towers"]}, *inputs, scene)
    elif phase == "ranking":
      if self.config.aggregation == "concat":
        agg = x.reshape(x.shape[0], -1)                                     # (B, K * W)
      else:
        agg = x.mean(axis=1)                                                # (B, W)
      inputs = jnp.concatenate([agg, batch["dense"]], axis=-1)
      base = None
      if self.residual:      # the frozen towers' logits on the example's own components
        own = [jnp.take_along_axis(x, p[:, None, None], axis=1)[:, 0]
               for p in self.own_sources(scene)]
        base = jnp.stack(self.towers.apply(
            {"params": params["embedding"]["towers"]},
            *[jnp.concatenate([o, batch["dense"]], axis=-1) for o in own], scene), axis=1)
      logits = self.ranker.apply({"params": params["ranking"]}, inputs, scene, base)
    else:
      raise ValueError(f"phase {phase!r}; MTMS has phases {tuple(self.phases)}")
    return {f"{task}_logit": logit for task, logit in zip(self.tasks, logits)}
