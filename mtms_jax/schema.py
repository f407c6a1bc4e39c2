"""Feature schema: what the columns of a data set are, as typed data apart from parameters.

A data set in mtms_jax is a dict of numpy columns (see `mtms_jax.data.Dataset`):

  ids         (N, F) int32    one column per sparse field, in `schema.sparse` order
  dense       (N, Nd) float32 one column per dense field, in `schema.dense` order
  scene       (N,) int32      service scenario, 0 <= scene < num_scenes
  click       (N,) float32    1 if the impression was clicked
  conversion  (N,) float32    1 if it converted (only possible after a click); absent from
                              CTR-only data (schema.tasks == ('ctr',))
  day         (N,) int32      time slot of the row

The schema travels with every run (`feature_schema.json` in the workdir) so that a run, a
checkpoint or a warm start can check it is reading the columns it was trained on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from mtms_jax import tasks as tasks_lib

COLUMNS = ("ids", "dense", "scene", "click", "conversion", "day")
# The predicted tasks a data set's labels support: clicks and conversions, or clicks only.
# ctcvr = ctr x cvr is derived, so it comes with cvr.
TASK_SETS = (tasks_lib.PREDICTED, tasks_lib.CTR_ONLY)


@dataclasses.dataclass(frozen=True)
class SparseField:
  """A categorical id field. Ids must already lie in [0, vocab_size) (hash before)."""
  name: str
  vocab_size: int
  dim: int = 16

  def __post_init__(self):
    if self.vocab_size < 1:
      raise ValueError(f"sparse field {self.name!r}: vocab_size must be >= 1, "
                       f"got {self.vocab_size}")
    if self.dim < 1:
      raise ValueError(f"sparse field {self.name!r}: dim must be >= 1, got {self.dim}")


@dataclasses.dataclass(frozen=True)
class DenseField:
  """A real-valued feature, fed to the towers as is (normalise it before)."""
  name: str


@dataclasses.dataclass(frozen=True)
class FeatureSchema:
  """Fields, scenes and predicted tasks of a data set.

  Example:
    schema = FeatureSchema(sparse=(SparseField('user', 1000), SparseField('ad', 300)),
                           dense=(DenseField('ctx'),), scenes=('feed', 'search'))
  """
  sparse: tuple[SparseField, ...]
  dense: tuple[DenseField, ...] = ()
  scenes: tuple[str, ...] = ("scene0",)
  tasks: tuple[str, ...] = TASK_SETS[0]

  def __post_init__(self):
    object.__setattr__(self, "sparse", tuple(self.sparse))
    object.__setattr__(self, "dense", tuple(self.dense))
    object.__setattr__(self, "scenes", tuple(self.scenes))
    object.__setattr__(self, "tasks", tuple(self.tasks))
    if self.tasks not in TASK_SETS:
      raise ValueError(f"tasks {self.tasks}: expected one of {TASK_SETS}")
    if not self.sparse:
      raise ValueError("a schema needs at least one sparse field")
    if not self.scenes:
      raise ValueError("a schema needs at least one scene")
    names = [f.name for f in self.sparse] + [f.name for f in self.dense]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
      raise ValueError(f"field names must be unique; repeated: {duplicates}")

  @property
  def num_scenes(self) -> int:
    return len(self.scenes)

  @property
  def columns(self) -> tuple[str, ...]:
    """The columns of a data set of this schema."""
    return tuple(c for c in COLUMNS if c != "conversion" or tasks_lib.CVR in self.tasks)

  @property
  def metric_tasks(self) -> tuple[str, ...]:
    """The tasks metrics and losses can have: the predicted ones, and ctcvr with cvr."""
    return tasks_lib.with_derived(self.tasks)

  @property
  def num_sparse(self) -> int:
    return len(self.sparse)

  @property
  def num_dense(self) -> int:
    return len(self.dense)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> FeatureSchema:
    return cls(sparse=tuple(SparseField(**f) for f in d["sparse"]),
               dense=tuple(DenseField(**f) for f in d.get("dense", ())),
               scenes=tuple(d["scenes"]), tasks=tuple(d.get("tasks", TASK_SETS[0])))

  def to_json(self) -> str:
    """The schema as feature_schema.json holds it (`load` reads it back)."""
    return json.dumps(self.to_dict(), indent=2)

  @classmethod
  def load(cls, path) -> FeatureSchema:
    with open(path) as f:
      return cls.from_dict(json.load(f))

  def validate(self, columns: Mapping[str, np.ndarray], source: str = "data") -> None:
    """Raises ValueError naming the column (and row) that does not fit this schema."""
    missing = [c for c in self.columns if c not in columns]
    if missing:
      raise ValueError(f"{source}: missing columns {missing}; expected {list(self.columns)}")
    n = len(columns["scene"])
    expected_shapes = {"ids": (n, self.num_sparse), "dense": (n, self.num_dense),
                       "scene": (n,), "click": (n,), "conversion": (n,), "day": (n,)}
    expected_shapes = {k: v for k, v in expected_shapes.items() if k in self.columns}
    for name, shape in expected_shapes.items():
      if columns[name].shape != shape:
        raise ValueError(f"{source}: column {name!r} has shape {columns[name].shape}, "
                         f"expected {shape}")
    ids = columns["ids"]
    for j, field in enumerate(self.sparse):
      bad = np.flatnonzero((ids[:, j] < 0) | (ids[:, j] >= field.vocab_size))
      if bad.size:
        raise ValueError(f"{source}: row {bad[0]}, sparse field {field.name!r}: id "
                         f"{ids[bad[0], j]} outside [0, {field.vocab_size})")
    _check_range(columns["scene"], 0, self.num_scenes - 1, "scene", source)
    _check_binary(columns["click"], "click", source)
    if "conversion" in self.columns:
      _check_binary(columns["conversion"], "conversion", source)
      bad = np.flatnonzero((columns["conversion"] > 0) & (columns["click"] == 0))
      if bad.size:
        raise ValueError(f"{source}: row {bad[0]}: conversion without a click")
    bad = np.flatnonzero(~np.isfinite(columns["dense"]).all(axis=1))
    if bad.size:
      raise ValueError(f"{source}: row {bad[0]}: non-finite dense value")


def _check_range(values, lo, hi, name, source):
  bad = np.flatnonzero((values < lo) | (values > hi))
  if bad.size:
    raise ValueError(f"{source}: row {bad[0]}, column {name!r}: {values[bad[0]]} "
                     f"outside [{lo}, {hi}]")


def _check_binary(values, name, source):
  bad = np.flatnonzero((values != 0) & (values != 1))
  if bad.size:
    raise ValueError(f"{source}: row {bad[0]}, column {name!r}: {values[bad[0]]} "
                     "is not 0 or 1")
