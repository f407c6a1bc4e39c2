"""Building blocks shared by the models. B batch, S scenes, I input width, H width."""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mtms_jax import errors
from mtms_jax.errors import UserError
from mtms_jax.models import kernels, routes

ROUTES = ("auto", "xla", "all", "gather", "grouped", "ragged", "kernel")


def check_widths(config: ml_collections.ConfigDict, where: str, *fields: str,
                 allow_empty=()) -> None:
  """Raises UserError naming `<where>.<field>` if a width list is empty or not > 0."""
  for field in fields:
    widths = tuple(config[field])
    errors.expect((widths or field in allow_empty) and all(w >= 1 for w in widths),
                  f"{where}.{field}", widths, "a tuple of widths >= 1")


def check_counts(config: ml_collections.ConfigDict, where: str, *fields: str) -> None:
  """Raises UserError naming `<where>.<field>` if a count (experts, levels, ...) is < 1."""
  for field in fields:
    errors.expect(config[field] >= 1, f"{where}.{field}", config[field], ">= 1")


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x @ kernel for x (B, I), kernel (I, H), with a weight gradient XLA:CPU computes fast.

  Autodiff's weight gradient contracts the batch, the leading axis of both operands; XLA:CPU
  runs that dot without its fast library kernel, several times slower than the forward
  for narrow layers (I x H = 1280 x 32: 9.8 ms against 6.3 ms with this rule, 2048 rows).
  Computing the (H, I) transpose instead takes the fast path; the barrier keeps XLA from
  folding the final transpose back into the dot.
  """
  return x @ kernel


def _matmul_fwd(x, kernel):
  return x @ kernel, (x, kernel)


def _matmul_bwd(residuals, dy):
  x, kernel = residuals
  kernel_t_grad = jax.lax.optimization_barrier(jnp.einsum("bi,bh->hi", x, dy))
  return dy @ kernel.T, kernel_t_grad.T


matmul.defvjp(_matmul_fwd, _matmul_bwd)


@jax.custom_vjp
def tile_matmul(x: jax.Array, kernels: jax.Array) -> jax.Array:
  """Per-tile matmul (N, T, I) x (N, I, H) -> (N, T, H); weight gradient as in `matmul`."""
  return jnp.einsum("nti,nih->nth", x, kernels)


def _tile_matmul_fwd(x, kernels):
  return tile_matmul(x, kernels), (x, kernels)


def _tile_matmul_bwd(residuals, dy):
  x, kernels = residuals
  kernels_t_grad = jax.lax.optimization_barrier(jnp.einsum("nti,nth->nhi", x, dy))
  return jnp.einsum("nth,nih->nti", dy, kernels), kernels_t_grad.transpose(0, 2, 1)


tile_matmul.defvjp(_tile_matmul_fwd, _tile_matmul_bwd)


def concat_matmul(parts: Sequence[jax.Array], kernel: jax.Array) -> jax.Array:
  """concat(parts, axis=-1) @ kernel as the sum of each part times its rows of `kernel`.

  No concatenated copy of the batch is made, and a part whose gradient is stopped costs no
  input gradient: autodiff of a matmul over the concatenation computes the input gradient
  of every column and then drops the stopped ones.
  """
  ends = np.cumsum([part.shape[-1] for part in parts])
  terms = [matmul(part, kernel[end - part.shape[-1]:end]) for part, end in zip(parts, ends)]
  return functools.reduce(operator.add, terms)


class DenseParams(nn.Module):
  """The parameters of a `Dense` of known input width, named as its own (kernel (I, H),
  bias (H,)), for a caller that multiplies by them itself (e.g. several layers' kernels on
  one input as one matmul)."""
  in_width: int
  features: int

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    return (self.param("kernel", nn.initializers.lecun_normal(), (self.in_width, self.features)),
            self.param("bias", nn.initializers.zeros, (self.features,)))


class Dense(nn.Module):
  """`nn.Dense` (same parameters: kernel (I, H), bias (H,)) through `matmul`, x (B, I)."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return matmul(x, kernel) + bias


class MLP(nn.Module):
  """Dense layers with ReLU between them; the last layer is linear."""
  features: Sequence[int]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.features):
      x = Dense(width, name=f"dense{i}")(x)
      if i < len(self.features) - 1:
        x = nn.relu(x)
    return x


class SceneGroups(NamedTuple):
  """Examples laid out by scene in tiles of `tile` rows, every tile holding one scene.

  slot: (B,) row of each example in the (num_tiles * tile) tiled layout; the other rows
    are padding.
  tile_scene: (num_tiles,) the scene of each tile (any scene for padding-only tiles).
  """
  slot: jax.Array
  tile_scene: jax.Array
  tile: int


def group_by_scene(scene: jax.Array, num_scenes: int, tile: int) -> SceneGroups:
  """Places examples by scene into tiles, in batch order within a scene.

  num_tiles = ceil(B / tile) + S bounds the tiles any batch needs (each scene's last tile
  may be partial), so shapes are static; padding grows with S, not with the batch. One sort
  of B single integers (scene * B + position) orders the examples: on a CPU it costs a
  small fraction of a cumulative sum over a (B, S) one-hot.
  """
  batch = scene.shape[0]
  num_tiles = -(-batch // tile) + num_scenes
  keys = jnp.sort(scene * batch + jnp.arange(batch, dtype=scene.dtype))
  order, sorted_scene = keys % batch, keys // batch
  counts = jnp.zeros(num_scenes, jnp.int32).at[scene].add(1)
  tiles = (counts + tile - 1) // tile
  tile_end = jnp.cumsum(tiles)
  rank = jnp.arange(batch) - (jnp.cumsum(counts) - counts)[sorted_scene]
  sorted_slot = (tile_end - tiles)[sorted_scene] * tile + rank
  slot = jnp.zeros(batch, jnp.int32).at[order].set(sorted_slot, unique_indices=True)
  tile_scene = jnp.searchsorted(tile_end, jnp.arange(num_tiles), side="right")
  return SceneGroups(slot, jnp.minimum(tile_scene, num_scenes - 1), tile)


class SceneMLP(nn.Module):
  """An MLP with its own weights per scene: example b goes through scene[b]'s weights.

  Weights are stacked over scenes (kernel (S, I, H)), and no route loops over scenes in
  Python. How examples meet their scene's weights (`route`):
    'all'      one matmul of every example with every scene's kernel, own scene kept:
               S times the FLOPs of one MLP; the fastest XLA route for a few scenes.
    'gather'   each example's kernels gathered, (B, I, H) a layer: for narrow layers only.
    'grouped'  examples placed by scene into tiles (`group_by_scene`), one batched matmul
               over the tiles a layer, the result gathered back: (B + S * tile) * I * H
               FLOPs, about one MLP's when S * tile <= B, whatever S is. `tile` None picks
               `auto_tile(B, S)`.
    'kernel'   a native CPU kernel (`mtms_jax.models.kernels.scene_matmul`) multiplies each example
               by its scene's weights in place: one MLP's FLOPs, no padding, no copies of
               the weights; needs the kernels built (`make setup`) and jax on the CPU.
    'ragged'   examples sorted by scene, one `jax.lax.ragged_dot` a layer (a grouped
               matmul over the scenes' runs of rows), the result put back in batch order:
               one MLP's FLOPs, no padding; the route for GPUs and TPUs, whose grouped
               matmul kernels it reaches.
    'auto'     the fastest of the candidate routes on this machine, measured on the
               layer's shapes (forward and backward) the first time it is traced, and
               cached per CPU, backend, versions and shapes (`mtms_jax.models.routes`):
               the native kernel beats XLA on an AVX-512 Xeon and loses to it on an
               AVX2-only EPYC. The rule of thumb ('kernel' where it is available,
               else 'xla') unless another route is more than routes.MARGIN faster;
               below routes.MIN_MEASURED_BATCH rows (and at init) no measurement.
    'xla'      'ragged' on GPU/TPU; on the CPU 'all' for S <= `max_all_scenes`, else
               'gather' when the widest layer has at most `max_gather_weights` weights,
               else 'grouped'. What 'auto' picks on several devices (mtms_jax.parallel):
               the native kernel is a one-device CPU plugin.
  """
  num_scenes: int
  features: Sequence[int]
  activate_last: bool = False
  zero_last: bool = False         # the last layer starts at 0 (a residual's correction)
  route: str = "auto"
  tile: int | None = None
  max_all_scenes: int = 4
  max_gather_weights: int = 1024

  @nn.compact
  def __call__(self, x: jax.Array, scene: jax.Array) -> jax.Array:
    """x (B, I), scene (B,) int -> (B, features[-1])."""
    widths = (x.shape[-1],) + tuple(self.features)
    layers = self._scene_layers(widths)
    route = self._route(widths, x.shape[0])
    if not self.is_initializing():
      routes.TAKEN[f"{'/'.join(self.path)}: {self._shapes(widths, x.shape[0])}"] = route
    if route == "all":
      return self._all(x, scene, layers)
    if route == "gather":
      return self._gather(x, scene, layers)
    if route == "grouped":
      return self._grouped(x, scene, layers)
    if route == "kernel":
      return self._kernel(x, scene, layers)
    if route == "ragged":
      return self._ragged(x, scene, layers)
    raise ValueError(f"SceneMLP route {self.route!r}; expected one of {ROUTES}")

  def _scene_layers(self, widths) -> list[tuple[jax.Array, jax.Array]]:
    """Each layer's (kernel (S, I, H), bias (S, H)): here parameters of their own; a
    subclass may compose them from others (models/star.py's shared x scene weights)."""
    kernel_init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    last = len(widths) - 2
    return [(self.param(f"kernel{i}", nn.initializers.zeros if self.zero_last and i == last
                        else kernel_init, (self.num_scenes, fan_in, fan_out)),
             self.param(f"bias{i}", nn.initializers.zeros, (self.num_scenes, fan_out)))
            for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:]))]

  def _route(self, widths, batch=None) -> str:
    """The route for a batch of `batch` rows (None: not known, no measurement)."""
    if self.route not in ("auto", "xla"):
      return self.route
    if self.route == "auto":
      candidates = self._candidates(widths)
      rule = "kernel" if "kernel" in candidates else self._xla_route(widths)
      if (isinstance(batch, int) and batch >= routes.MIN_MEASURED_BATCH
          and not self.is_initializing()):
        return routes.fastest(self._shapes(widths, batch), candidates, rule,
                              lambda route: self._timed_program(route, widths, batch))
      return rule
    return self._xla_route(widths)

  def _xla_route(self, widths) -> str:
    if jax.default_backend() != "cpu":
      return "ragged"
    if self.num_scenes <= self.max_all_scenes:
      return "all"
    return "gather" if self._largest(widths) <= self.max_gather_weights else "grouped"

  def _candidates(self, widths) -> tuple[str, ...]:
    """The routes 'auto' measures: those that can be the fastest here. 'all' costs S
    times the FLOPs and 'gather' copies every example's weights, so they run only for a
    few scenes and narrow layers."""
    few_scenes = ("all",) if self.num_scenes <= 2 * self.max_all_scenes else ()
    if jax.default_backend() != "cpu":
      return ("ragged",) + few_scenes + ("grouped",)
    # Not 'ragged': XLA:CPU runs ragged_dot as a loop, 3-5x slower than 'all' or
    # 'grouped' on a [320, 16, 8, 1] tower (2 scenes, 2048 rows), and its compile would
    # add a second to the measurement.
    native = ("kernel",) if kernels.available() else ()
    narrow = ("gather",) if self._largest(widths) <= self.max_gather_weights else ()
    return native + few_scenes + narrow + ("grouped",)

  @staticmethod
  def _largest(widths) -> int:
    return max(a * b for a, b in zip(widths[:-1], widths[1:]))

  def _shapes(self, widths, batch) -> str:
    last = ", activated" if self.activate_last else ""
    return f"{self.num_scenes} scenes x {list(widths)}{last}, batch {batch}"

  def _timed_program(self, route, widths, batch):
    """A call of this layer's forward and backward by `route` on random inputs of the
    real shapes (scenes uniform), for routes.fastest to time."""
    mlp = self.clone(parent=None, route=route)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, widths[0]), np.float32)
    scene = rng.integers(0, self.num_scenes, batch, dtype=np.int32)
    dy = rng.standard_normal((batch, widths[-1]), np.float32)
    # Parameters of the shapes init would make (a subclass has its own: models/star.py),
    # drawn directly: an eager init costs seconds.
    shapes = jax.eval_shape(mlp.init, jax.random.key(0), x[:1], scene[:1])
    params = jax.tree.map(lambda a: rng.standard_normal(a.shape, np.float32) / widths[0], shapes)
    grad = jax.jit(jax.grad(lambda p, x, scene, dy: jnp.sum(mlp.apply(p, x, scene) * dy),
                            argnums=(0, 1)))
    return lambda: grad(params, x, scene, dy)

  def _activate(self, x, i):
    return nn.relu(x) if i < len(self.features) - 1 or self.activate_last else x

  def _all(self, x, scene, layers):
    select = jax.nn.one_hot(scene, self.num_scenes, dtype=x.dtype)[:, :, None]   # (B, S, 1)
    for i, (kernel, bias) in enumerate(layers):
      s, fan_in, fan_out = kernel.shape
      if i == 0:
        y = matmul(x, kernel.transpose(1, 0, 2).reshape(fan_in, s * fan_out))    # (B, S*H)
      else:     # x holds every scene's activations: (B, S, I) with per-scene kernels
        y = jnp.einsum("bsi,sih->bsh", x, kernel)
      x = self._activate(y.reshape(-1, s, fan_out) + bias, i)
    return jnp.sum(x * select, axis=1)

  def _gather(self, x, scene, layers):
    for i, (kernel, bias) in enumerate(layers):
      x = self._activate(jnp.einsum("bi,bih->bh", x, kernel[scene]) + bias[scene], i)
    return x

  def _kernel(self, x, scene, layers):
    if not kernels.available():
      raise UserError("scene_route 'kernel' needs the native kernels on the CPU backend; "
                      "build them with `make setup` (python -m mtms_jax.models.kernels)")
    for i, (kernel, bias) in enumerate(layers):
      x = self._activate(kernels.scene_matmul(x, kernel, scene) + bias[scene], i)
    return x

  def _ragged(self, x, scene, layers):
    order = jnp.argsort(scene, stable=True)
    sizes = jnp.zeros(self.num_scenes, jnp.int32).at[scene].add(1)
    x, sorted_scene = x[order], scene[order]
    for i, (kernel, bias) in enumerate(layers):
      x = self._activate(jax.lax.ragged_dot(x, kernel, sizes) + bias[sorted_scene], i)
    # order is a permutation: its scatter needs no duplicate handling.
    return jnp.zeros_like(x).at[order].set(x, unique_indices=True)

  def _grouped(self, x, scene, layers):
    tile = self.tile or auto_tile(x.shape[0], self.num_scenes)
    groups = group_by_scene(scene, self.num_scenes, tile)
    num_tiles = groups.tile_scene.shape[0]
    # Slots are distinct: saying so spares the scatter and its gradient duplicate handling.
    tiled = jnp.zeros((num_tiles * tile, x.shape[-1]), x.dtype).at[groups.slot].set(
        x, unique_indices=True)
    tiled = tiled.reshape(num_tiles, tile, -1)
    for i, (kernel, bias) in enumerate(layers):
      y = tile_matmul(tiled, kernel[groups.tile_scene])
      tiled = self._activate(y + bias[groups.tile_scene][:, None, :], i)
    return tiled.reshape(num_tiles * tile, -1).at[groups.slot].get(unique_indices=True)


def auto_tile(batch: int, num_scenes: int) -> int:
  """Rows a tile for `batch` examples over `num_scenes` scenes: a power of two in [16, 64]
  near batch / (3 * num_scenes), so the padding (up to a tile a scene) stays about a third
  of the batch. Bigger tiles make bigger, faster matmuls on a CPU: one (320, 16, 8) tower's
  forward and backward on 2048 rows over 10 scenes took 2.5 ms with 64-row tiles, 3.3-3.9 ms
  with 16; over 100 scenes 16-row tiles beat 8-row ones (4.7 against 10.5 ms)."""
  if not isinstance(batch, int):     # symbolic (jax.export): no comparison can be decided
    return 16
  target = max(batch // (3 * num_scenes), 1)
  return int(min(max(1 << (target.bit_length() - 1), 16), 64))
