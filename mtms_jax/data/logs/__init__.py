"""One's own logs through a schema file (mtms_jax/schema_file.py): `--config.data.schema=PATH`.

`configure(config)` runs before anything else (main.py, sweep.py): it prepares the cache
(mtms_jax/data/prepare.py), so bad input fails before any training, and sets the days the
run trains and tests on from the schema. `load(schema)` opens the prepared cache, memory-
mapped: a log bigger than memory trains, reading the rows each batch needs.
"""

from __future__ import annotations

import ml_collections

from mtms_jax import tasks as tasks_lib
from mtms_jax.data import Dataset
from mtms_jax.data.logs import prepare, schema_file
from mtms_jax.errors import UserError
from mtms_jax.schema import DenseField, FeatureSchema, SparseField


def configure(config: ml_collections.ConfigDict) -> None:
  """Prepares `config.data.schema` if set, and sets train_days, test_day, validation.day
  and, in a comparison, the scene its table reports: the logs' first scene (the one-scene
  rows of experiments/common.py train on scene 0)."""
  if not config.get("data", {}).get("schema"):
    return
  schema = schema_file.load(config.data.schema)
  manifest = prepare.prepare(schema)
  train_days, test_day = days(schema, manifest)
  config.train_days = train_days
  config.test_day = test_day
  config.validation.day = schema_file.validation_day(schema)
  if "compare" in config:
    config.compare.scene = manifest["scenes"][0]
  if tasks_lib.CVR not in schema.tasks:
    follow_tasks(config, tasks_lib.CTR_ONLY)


def follow_tasks(config: ml_collections.ConfigDict, tasks: tuple[str, ...],
                 prefix: str = "config") -> None:
  """Makes the losses, metrics and table tasks of `config` those of data with `tasks` only:
  absent tasks leave each loss, a metric on one becomes the same metric on CTR.

  Raises:
    UserError: a loss trains none of `tasks` (e.g. Table I's fine-tune loss 'cvr').
  """
  for key, value in config.items():
    where = f"{prefix}.{key}"
    if isinstance(value, ml_collections.ConfigDict):
      follow_tasks(value, tasks, where)
    elif key == "loss":
      kept = [t for t in value.split("+") if t.strip() in tasks]
      if not kept:
        raise UserError(f"{where}={value!r} trains none of the tasks of the data ({tasks}: "
                        "the schema has no conversion label)")
      config[key] = "+".join(kept)
    elif key in ("metric", "best_metric") and value:
      config[key] = value.replace("/ctcvr/", "/ctr/").replace("/cvr/", "/ctr/")
    elif key == "tasks" and prefix.endswith("compare"):
      config[key] = tuple(t for t in value if t in tasks) or tasks


def days(schema: schema_file.LogSchema, manifest: dict) -> tuple[tuple[int, ...], int]:
  """(train days, test day): the schema's `split`, else its splits' days, else (with a day
  column) every day but the last, and the last."""
  present = sorted(int(d) for d in manifest["rows_per_day"])
  train_days = schema.train_days or tuple(present[:-1])
  test_day = schema.test_day if schema.test_day >= 0 else present[-1]
  missing = sorted(set(train_days + (test_day,)) - set(present))
  if missing or not train_days:
    raise UserError(f"{schema.path}: split: train days {list(train_days)} and test day "
                    f"{test_day} must be days with rows, at least one of each; the data has "
                    f"days {present}")
  return train_days, test_day


def load(schema: str) -> Dataset:
  """The prepared cache of schema file `schema` (prepared first if it is not up to date)."""
  log_schema = schema_file.load(schema)
  manifest = prepare.prepare(log_schema)
  features = FeatureSchema(
      sparse=tuple(SparseField(f.name, f.size, f.dim) for f in log_schema.sparse),
      dense=tuple(DenseField(f.name) for f in log_schema.dense),
      scenes=tuple(manifest["scenes"]), tasks=log_schema.tasks)
  # Checked value by value while preparing; checking again would read the whole cache.
  return Dataset(prepare.open_cache(log_schema.cache, manifest), features, name=schema,
                 validate=False)
