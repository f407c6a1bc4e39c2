"""STAR (Sheng et al., CIKM 2021, "One Model to Serve All"), with a CTR and a CVR head.

Notation: B batch, S scenes, T tasks (ctr, cvr; ctr alone on CTR-only data), W = summed
field dims, Nd dense features, I = W + Nd the star network's input, H a layer's width.

One shared table set, one joint phase (`joint.JointModel`); what STAR adds is how the scene
shapes the network, in the paper's three parts:

- Partitioned normalization (Sec. 4.2, Eq. 2): the input is normalized with its scene's
  statistics, z' = (gamma * gamma_p) * (z - E_p) / sqrt(Var_p + eps) + (beta + beta_p):
  a shared scale and bias (gamma, beta) times / plus scene p's. A training update uses the
  mean and variance of the batch's rows of scene p (all devices' rows under pmap); eval
  uses the moving averages E_p, Var_p, which `update_statistics` moves towards the batch's
  after every update (a scene without rows in the batch keeps its own). The averages start
  at 0 and are read debiased, divided by 1 - momentum ** (the scene's updates), as Adam reads
  its moments: at momentum 0.99 an average started at (0, 1) still weighed its start 82%
  after 20 updates, so the evaluations that stop a short run early scored inputs scaled by
  the start's variance, not the data's (the regime map's runs stopped at their first
  evaluations). They live in params['ranking']['statistics']: saved, restored, exported and
  copied with the network they belong to, but they are not gradients, so the update step
  sets them itself.
- Star topology FCN (Sec. 4.1, Eq. 1): every layer of scene p computes
  relu(x @ (W * W_p) + (b + b_p)), the shared weights times the scene's, element-wise, plus
  the biases. Here a bottom of `star_hidden` layers shared by the tasks, then one star
  tower per task, `tower_hidden` + a logit (the paper's single task is one tower). Scene
  weights start at 1 and their biases at 0, so every scene starts at the shared network.
  The combined (S, I, H) kernels go through layers.SceneMLP's routes, so an example costs
  one layer's FLOPs whatever S is.
- Auxiliary network (Sec. 4.3): a small MLP on the scene indicator and the features, whose
  logit (one per task) is added to the star tower's before the sigmoid. The indicator's
  embedding is the one-hot scene times the first layer's kernel, as in joint.py's input;
  the data sets here have no features that describe a scene only, so it reads them all.

config.model: star_hidden (widths of the shared-by-tasks star bottom), tower_hidden
(hidden widths of each task's star tower), aux_hidden (hidden widths of the auxiliary
network), statistics_momentum (of the moving statistics), norm_epsilon, scene_route
(layers.SceneMLP's route; default 'xla': on the CPU the native kernel's route made a STAR
update slower, README Performance). Reference sizes: experiments/common.JOINT_MODELS.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mtms_jax import errors
from mtms_jax.models import joint, layers
from mtms_jax.models.layers import MLP, ROUTES, SceneMLP

# Up to this many scenes, summing rows by scene is a one-hot matmul and taking each
# example's scene's row of an (S, K) array a one-hot matmul or (up to MAX_SELECT_SCENES) a
# chain of selects, which XLA fuses into the elementwise op that reads the rows instead of
# writing a (B, K) array. Beyond, a gather and a scatter-add, whose cost does not grow with
# S but which XLA:CPU runs several times slower.
MAX_ONE_HOT_SCENES = 16
MAX_SELECT_SCENES = 4


def scene_rows(table: jax.Array, scene: jax.Array) -> jax.Array:
  """table (S, K), scene (B,) -> (B, K): each example's scene's row."""
  num_scenes = table.shape[0]
  if num_scenes <= MAX_SELECT_SCENES:
    rows = jnp.broadcast_to(table[0], (scene.shape[0], table.shape[1]))
    for s in range(1, num_scenes):
      rows = jnp.where((scene == s)[:, None], table[s], rows)
    return rows
  if num_scenes <= MAX_ONE_HOT_SCENES:
    return jax.nn.one_hot(scene, num_scenes, dtype=table.dtype) @ table
  return table[scene]


def scene_sums(x: jax.Array, scene: jax.Array, num_scenes: int) -> jax.Array:
  """x (B, K), scene (B,) -> (S, K): the sum of each scene's rows."""
  if num_scenes <= MAX_ONE_HOT_SCENES:
    return jnp.einsum("bs,bk->sk", jax.nn.one_hot(scene, num_scenes, dtype=x.dtype), x)
  return jax.ops.segment_sum(x, scene, num_scenes)


def scene_moments(x: jax.Array, scene: jax.Array, num_scenes: int,
                  axis_name: str | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Rows (S,), mean (S, I) and biased variance (S, I) of each scene's rows of x (B, I).

  A scene without rows has mean 0 and variance 0. axis_name: the batch is split over
  devices; the moments are those of the whole batch (sums over every device's rows).
  """
  def total(v):
    return v if axis_name is None else jax.lax.psum(v, axis_name)
  count = total(scene_sums(jnp.ones((x.shape[0], 1), x.dtype), scene, num_scenes))[:, 0]
  per_row = 1.0 / jnp.maximum(count, 1.0)[:, None]
  mean = total(scene_sums(x, scene, num_scenes)) * per_row
  # Two passes: E[(x - mean)^2] keeps float32 precision where E[x^2] - mean^2 would not.
  var = total(scene_sums(jnp.square(x - scene_rows(mean, scene)), scene, num_scenes)) * per_row
  return count, mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def batch_norm_by_scene(x: jax.Array, scene: jax.Array, scale: jax.Array, bias: jax.Array,
                        num_scenes: int, epsilon: float, axis_name: str | None) -> jax.Array:
  """scale_p * (x - mean_p) / sqrt(var_p + eps) + bias_p, p = scene[b], with each scene's
  batch moments (`scene_moments`); scale and bias (S, I).

  Its gradient is batch normalization's closed form, per scene:
    dx = scale_p / sqrt(var_p + eps) * (dy - mean_p(dy) - xhat * mean_p(dy * xhat)),
  the derivative of the two-pass moments, which autodiff takes in about twice the passes over
  the (B, I) arrays (a STAR update's costliest part on the CPU). Under pmap (axis_name) the
  moments and the two means are the whole batch's; scale's and bias's gradients are this
  device's rows', as autodiff gives them.
  """
  return _batch_norm_forward(x, scene, scale, bias, num_scenes, epsilon, axis_name)[0]


def _batch_norm_forward(x, scene, scale, bias, num_scenes, epsilon, axis_name):
  count, mean, var = scene_moments(x, scene, num_scenes, axis_name)
  inv_std = jax.lax.rsqrt(var + epsilon)
  y = (x - scene_rows(mean, scene)) * scene_rows(scale * inv_std, scene) + scene_rows(bias, scene)
  return y, (x, scene, scale, count, mean, inv_std)


def _batch_norm_backward(num_scenes, epsilon, axis_name, residuals, dy):
  x, scene, scale, count, mean, inv_std = residuals
  xhat = (x - scene_rows(mean, scene)) * scene_rows(inv_std, scene)
  d_bias, d_scale = scene_sums(dy, scene, num_scenes), scene_sums(dy * xhat, scene, num_scenes)
  def total(v):
    return v if axis_name is None else jax.lax.psum(v, axis_name)
  per_row = 1.0 / jnp.maximum(count, 1.0)[:, None]
  dx = scene_rows(scale * inv_std, scene) * (
      dy - scene_rows(total(d_bias) * per_row, scene)
      - xhat * scene_rows(total(d_scale) * per_row, scene))
  return dx, None, d_scale, d_bias


batch_norm_by_scene.defvjp(_batch_norm_forward, _batch_norm_backward)


class PartitionedNorm(nn.Module):
  """(gamma * gamma_p) * (x - mean_p) / sqrt(var_p + eps) + (beta + beta_p), p = scene[b]."""
  num_scenes: int
  epsilon: float

  @nn.compact
  def __call__(self, x, scene, mean=None, var=None, axis_name=None):
    """x (B, I), scene (B,); mean and var (S, I): the statistics it normalizes with, None:
    the batch's own (training; axis_name: the batch is split over devices)."""
    width = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (width,))
    bias = self.param("bias", nn.initializers.zeros, (width,))
    scene_scale = self.param("scene_scale", nn.initializers.ones, (self.num_scenes, width))
    scene_bias = self.param("scene_bias", nn.initializers.zeros, (self.num_scenes, width))
    scale, bias = scale * scene_scale, bias + scene_bias                         # (S, I)
    if mean is None:
      return batch_norm_by_scene(x, scene, scale, bias, self.num_scenes, self.epsilon,
                                 axis_name)
    a = scale * jax.lax.rsqrt(var + self.epsilon)
    return x * scene_rows(a, scene) + scene_rows(bias - mean * a, scene)


class StarMLP(SceneMLP):
  """A SceneMLP whose scene p's kernel is W * W_p and bias b + b_p (shared, scene p's):
  the star topology FCN. Parameters per layer: kernel (I, H), bias (H,) shared;
  scene_kernel (S, I, H) (starts at 1), scene_bias (S, H) (starts at 0)."""

  def _scene_layers(self, widths) -> list[tuple[jax.Array, jax.Array]]:
    out = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
      kernel = self.param(f"kernel{i}", nn.initializers.lecun_normal(), (fan_in, fan_out))
      bias = self.param(f"bias{i}", nn.initializers.zeros, (fan_out,))
      scene_kernel = self.param(f"scene_kernel{i}", nn.initializers.ones,
                                (self.num_scenes, fan_in, fan_out))
      scene_bias = self.param(f"scene_bias{i}", nn.initializers.zeros,
                              (self.num_scenes, fan_out))
      out.append((kernel * scene_kernel, bias + scene_bias))
    return out


class Network(nn.Module):
  """(B, I) input, its scene and normalizing statistics -> a logit per task (B,)."""
  num_scenes: int
  star_hidden: Sequence[int]
  tower_hidden: Sequence[int]
  aux_hidden: Sequence[int]
  tasks: Sequence[str]
  epsilon: float
  route: str

  @nn.compact
  def __call__(self, x, scene, mean=None, var=None, axis_name=None) -> tuple[jax.Array, ...]:
    """mean, var None: normalized with the batch's statistics (PartitionedNorm)."""
    h = PartitionedNorm(self.num_scenes, self.epsilon, name="norm")(x, scene, mean, var,
                                                                     axis_name)
    if self.star_hidden:
      h = StarMLP(self.num_scenes, tuple(self.star_hidden), activate_last=True,
                  route=self.route, name="bottom")(h, scene)
    one_hot = jax.nn.one_hot(scene, self.num_scenes, dtype=x.dtype)
    aux = MLP(tuple(self.aux_hidden) + (len(self.tasks),), name="auxiliary")(
        jnp.concatenate([x, one_hot], axis=-1))                              # (B, T)
    features = tuple(self.tower_hidden) + (1,)
    return tuple(StarMLP(self.num_scenes, features, route=self.route, name=task)(h, scene)[:, 0]
                 + aux[:, t] for t, task in enumerate(self.tasks))


class Model(joint.JointModel):
  """STAR; see the module docstring."""

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict, where: str = "config.model") -> None:
    layers.check_widths(config, where, "star_hidden", "tower_hidden", "aux_hidden",
                        allow_empty=("star_hidden", "tower_hidden", "aux_hidden"))
    momentum = config.statistics_momentum
    errors.expect(0 <= momentum < 1, f"{where}.statistics_momentum", momentum, "in [0, 1)")
    errors.expect(config.norm_epsilon > 0, f"{where}.norm_epsilon", config.norm_epsilon, "> 0")
    errors.expect_choice(f"{where}.scene_route", config.get("scene_route", "xla"), ROUTES)

  def make_network(self, config: ml_collections.ConfigDict) -> nn.Module:
    return Network(self.num_scenes, tuple(config.star_hidden), tuple(config.tower_hidden),
                   tuple(config.aux_hidden), self.schema.tasks, config.norm_epsilon,
                   config.get("scene_route", "xla"))

  @property
  def star_width(self) -> int:
    """I: the star network's input, [field embeddings, dense] (the scene shapes its weights)."""
    return self.layout.width + self.schema.num_dense

  def _init_network(self, rng: jax.Array) -> dict:
    shape = (self.num_scenes, self.star_width)
    # Sums of the moving averages and each scene's updates (float: params are optimized).
    statistics = {"mean": jnp.zeros(shape), "var": jnp.zeros(shape),
                  "updates": jnp.zeros(self.num_scenes)}
    network = self.network.init(rng, jnp.zeros((1, self.star_width)), jnp.zeros((1,), jnp.int32),
                                *self.moving_statistics(statistics))["params"]
    return {"network": network, "statistics": statistics}

  def moving_statistics(self, statistics: dict) -> tuple[jax.Array, jax.Array]:
    """(mean, var) (S, I) that eval normalizes with: the debiased moving averages; mean 0
    and variance 1 for a scene never seen in training."""
    seen = (statistics["updates"] > 0)[:, None]
    debias = 1 - self.config.statistics_momentum ** statistics["updates"][:, None]
    safe = jnp.where(seen, debias, 1.0)
    return (jnp.where(seen, statistics["mean"] / safe, 0.0),
            jnp.where(seen, statistics["var"] / safe, 1.0))

  def star_input(self, rows, batch, phase: str) -> jax.Array:
    return self.network_input(rows, batch, phase)[:, :self.star_width]

  def apply(self, params, rows, batch, phase: str, train: bool = False,
            axis_name: str | None = None) -> dict[str, jax.Array]:
    x, scene = self.star_input(rows, batch, phase), batch["scene"]
    network = {"params": params["ranking"]["network"]}
    if train:
      logits = self.network.apply(network, x, scene, axis_name=axis_name)
    else:
      logits = self.network.apply(network, x, scene,
                                  *self.moving_statistics(params["ranking"]["statistics"]))
    return self.logits_by_task(logits)

  def update_statistics(self, params, new_params, rows, batch, axis_name: str | None = None):
    """new_params with statistics = momentum * old + (1 - momentum) * the batch's, and one
    more update counted, for every scene with rows in the batch; the others keep theirs."""
    count, mean, var = scene_moments(self.star_input(rows, batch, "joint"), batch["scene"],
                                     self.num_scenes, axis_name)
    momentum, seen = self.config.statistics_momentum, count > 0
    old = params["ranking"]["statistics"]

    def move(average, batch_value):
      return jnp.where(seen[:, None], momentum * average + (1 - momentum) * batch_value, average)

    moved = {"mean": move(old["mean"], mean), "var": move(old["var"], var),
             "updates": old["updates"] + seen}
    return {**new_params, "ranking": {**new_params["ranking"], "statistics": moved}}
