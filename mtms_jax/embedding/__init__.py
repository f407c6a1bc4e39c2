"""Stacked embedding tables: every component's tables in one array per embedding dim.

Notation: B batch, F sparse fields, D embedding dim, C components, K components looked up
per example.

A component is a unit that owns an independent set of embedding tables: a (scene, task) pair
in MTMS (paper Fig. 1), one scene in the shared-across-tasks variants, or the single shared
component of ESMM-style models. The tables of all components and all fields of one dim are
stacked in one array of shape (V * C, D), V the summed vocabulary of those fields, so that a
lookup for any mix of components and fields is ONE gather:

  row = (field_offset + id) * C + component

Components are the fastest-varying index: the C rows of one id sit next to each other, so
the components an example reads for an id (its scene's ctr and cvr; every component in the
ranking phase) share cache lines' neighbourhood and memory pages instead of lying C table
slices apart (each a page-table walk on a large table).

`lookup` is the one place that reads tables; the sparse optimizers differentiate with respect
to its output (the gathered rows) instead of the tables.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mtms_jax import pytree
from mtms_jax.schema import FeatureSchema

Tables = dict[str, jax.Array]


def in_tables(path, leaf=None) -> bool:
  """Whether the leaf at `path` of the params or train state is (part of) an embedding
  table, params['embedding']['tables'], or of the tables' optimizer state, opt[phase]['tables']
  (`leaf` unused: a `tree_map_with_path` callback)."""
  del leaf
  return "tables" in pytree.key_names(path)


@dataclasses.dataclass(frozen=True)
class TableGroup:
  """The fields of one embedding dim, stacked over components."""
  key: str                       # params key, e.g. 'dim16'
  dim: int
  fields: tuple[int, ...]        # positions in schema.sparse
  offsets: tuple[int, ...]       # row offset of each field inside one component
  rows_per_component: int        # V: summed vocabulary of the group's fields


@dataclasses.dataclass(frozen=True)
class TableLayout:
  groups: tuple[TableGroup, ...]
  num_components: int

  @property
  def num_rows(self) -> dict[str, int]:
    return {g.key: g.rows_per_component * self.num_components for g in self.groups}

  @property
  def width(self) -> int:
    """Features per component after concatenating all fields: sum of dims over fields."""
    return sum(g.dim * len(g.fields) for g in self.groups)


def make_layout(schema: FeatureSchema, num_components: int) -> TableLayout:
  groups = []
  for dim in sorted({f.dim for f in schema.sparse}):
    fields = tuple(j for j, f in enumerate(schema.sparse) if f.dim == dim)
    sizes = [schema.sparse[j].vocab_size for j in fields]
    offsets = tuple(int(o) for o in np.cumsum([0] + sizes[:-1]))
    groups.append(TableGroup(f"dim{dim}", dim, fields, offsets, int(sum(sizes))))
  return TableLayout(tuple(groups), num_components)


INIT_CHUNK_ROWS = 1 << 16


@functools.partial(jax.jit, static_argnums=(1, 2))
def init_table(rng: jax.Array, num_rows: int, dim: int, stddev: float = 0.05) -> jax.Array:
  """A Normal(0, stddev) (num_rows, dim) float32 table, drawn in chunks of rows in place.

  Drawing a whole table at once peaks at about four times its size (the random bits and
  their transforms); a loop over chunks updates the table in place, so the peak is the
  table plus one chunk, whatever its size. The last chunk overlaps the one before it
  rather than overhanging the table.
  """
  chunk = min(INIT_CHUNK_ROWS, num_rows)

  def fill(c, table):
    values = stddev * jax.random.normal(jax.random.fold_in(rng, c), (chunk, dim), jnp.float32)
    return jax.lax.dynamic_update_slice(table, values, (jnp.minimum(c * chunk, num_rows - chunk), 0))

  return jax.lax.fori_loop(0, -(-num_rows // chunk), fill, jnp.zeros((num_rows, dim), jnp.float32))


def init_tables(rng: jax.Array, layout: TableLayout, stddev: float = 0.05) -> Tables:
  """Normal(0, stddev) tables, one `init_table` per group."""
  keys = jax.random.split(rng, len(layout.groups))
  return {g.key: init_table(k, layout.num_rows[g.key], g.dim, stddev)
          for k, g in zip(keys, layout.groups)}


def row_index(layout: TableLayout, ids: jax.Array, components: jax.Array) -> dict[str, jax.Array]:
  """Flat table rows for each example, component and field.

  Args:
    ids: (B, F) int32 ids, one column per sparse field.
    components: (B, K) int32 component of each of the K lookups of an example.
  Returns:
    {group key: (B, K, F_g) int32 rows into that group's table}.
  """
  index = {}
  for g in layout.groups:
    field_ids = _columns(ids, g.fields) + jnp.asarray(g.offsets, jnp.int32)      # (B, F_g)
    index[g.key] = (field_ids[:, None, :] * layout.num_components
                    + components[:, :, None]).astype(jnp.int32)
  return index


def _columns(ids: jax.Array, fields: tuple[int, ...]) -> jax.Array:
  # A run of consecutive fields (one dim for all fields, the usual case) is a slice; a
  # list index would be a gather over the columns.
  if fields == tuple(range(fields[0], fields[0] + len(fields))):
    return ids[:, fields[0]:fields[0] + len(fields)]
  return ids[:, list(fields)]


def lookup(tables: Tables, index: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Gathers rows: {key: (B, K, F_g)} -> {key: (B, K, F_g, D_g)}. One gather per dim."""
  return {k: jnp.take(tables[k], idx, axis=0, mode="clip") for k, idx in index.items()}


def flatten_rows(rows: dict[str, jax.Array]) -> jax.Array:
  """(B, K, F_g, D_g) per group -> (B, K, sum_g F_g * D_g), groups in sorted-key order."""
  parts = [r.reshape(r.shape[:2] + (-1,)) for _, r in sorted(rows.items())]
  return jnp.concatenate(parts, axis=-1)
