r"""Export a trained run for serving: `python -m mtms_jax.export --workdir W --out DIR`.

DIR is self-contained; `mtms_jax.serving.load(DIR)` scores with it, without this package's
training code (jax and numpy only):

  model.stablehlo   the scoring function (params, batch) -> {task: probability} (the schema's
                    tasks), serialized with jax.export (StableHLO, a symbolic batch dimension)
  params/<i>.npy    every parameter array, the embedding tables included: inputs of the
                    graph, not constants baked into it, so tables can be replaced or
                    memory-mapped without re-exporting
  manifest.json     parameter name ('embedding/tables/dim16') -> its .npy file, shape, dtype
  schema.json       the feature schema (fields, vocabularies, dims, scenes), the tasks, the
                    batch columns the function reads, and where the model came from

The parameters are those of the workdir's latest checkpoint: a finished run's last save is
at its end, so they are the parameters its results.json was computed with. Each task is
predicted as in training (`step.prediction_phases`). The graph is traced with the native
kernels off (`kernels.disabled()`): their custom calls would need this package's shared
library in the serving process.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from mtms_jax import checkpoint, errors, models, pytree, rundir
from mtms_jax.eval import prediction
from mtms_jax.models import kernels
from mtms_jax.schema import FeatureSchema

GRAPH, MANIFEST, SCHEMA, PARAMS = "model.stablehlo", "manifest.json", "schema.json", "params"
BATCH_COLUMNS = ("ids", "dense", "scene")


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, FeatureSchema]:
  """The config and feature schema of a run's workdir; UserError if it is not a run's."""
  paths = [os.path.join(workdir, f) for f in (rundir.CONFIG, rundir.SCHEMA)]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing or not os.path.isdir(os.path.join(workdir, checkpoint.CHECKPOINTS)):
    raise errors.UserError(f"--workdir={workdir!r} is not a trained run's folder (it needs "
                           f"{rundir.CONFIG}, {rundir.SCHEMA} and {checkpoint.CHECKPOINTS}/)")
  with open(paths[0]) as f:
    config = ml_collections.ConfigDict(json.load(f))
  return config, FeatureSchema.load(paths[1])


def restore_params(workdir: str, model, schema: FeatureSchema) -> tuple[dict, dict]:
  """(params, source) of the workdir's latest checkpoint, checked against the model."""
  abstract = jax.eval_shape(model.init, jax.random.key(0))
  try:
    return checkpoint.warm_start(workdir, abstract, schema.to_dict(), tuple(abstract))
  except FileNotFoundError as e:
    raise errors.UserError(f"--workdir={workdir!r}: {e}") from e


def batch_spec(schema: FeatureSchema, batch=None) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of the columns a score reads; `batch` None: a symbolic batch dimension."""
  if batch is None:
    batch, = jax.export.symbolic_shape("batch")
  return {"ids": jax.ShapeDtypeStruct((batch, schema.num_sparse), jnp.int32),
          "dense": jax.ShapeDtypeStruct((batch, schema.num_dense), jnp.float32),
          "scene": jax.ShapeDtypeStruct((batch,), jnp.int32)}


def make_score_fn(config: ml_collections.ConfigDict, model, params: dict):
  """score(flat params, batch) -> {'ctr', 'cvr'}: the run's predictions, params by name
  (`pytree.flat_names`) so that the serving side needs no pytree structure."""
  predict = prediction.make_predict_fn(model, prediction.prediction_phases(config, model))
  names, treedef = list(pytree.flat_names(params)), jax.tree.structure(params)

  def score(flat: dict[str, jax.Array], batch: dict[str, jax.Array]):
    # By name: jax orders a dict's leaves by sorted key, not by the params' leaf order.
    return predict(jax.tree.unflatten(treedef, [flat[k] for k in names]), batch)
  return jax.jit(score)


def export(workdir: str, out: str) -> dict:
  """Writes the serving artifact of `workdir`'s latest checkpoint to `out`; returns the
  contents of its schema.json."""
  config, schema = load_run(workdir)
  model = models.get_model(schema, config.model)
  params, source = restore_params(workdir, model, schema)
  return write_artifact(out, config, model, params, {
      "workdir": os.path.abspath(workdir), "step": source["step"], "model": config.model.name})


def write_artifact(out: str, config: ml_collections.ConfigDict, model, params: dict,
                   source: dict) -> dict:
  """Writes `model` with `params` to `out` (module docstring); `source` goes to schema.json."""
  flat = pytree.flat_names(params)
  with kernels.disabled():
    exported = jax.export.export(make_score_fn(config, model, params))(
        {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat.items()},
        batch_spec(model.schema))
  os.makedirs(os.path.join(out, PARAMS), exist_ok=True)
  with open(os.path.join(out, GRAPH), "wb") as f:
    f.write(exported.serialize())
  manifest = {}
  for i, (name, value) in enumerate(flat.items()):
    value = np.asarray(value)
    manifest[name] = {"file": f"{PARAMS}/{i}.npy", "shape": list(value.shape),
                      "dtype": str(value.dtype)}
    np.save(os.path.join(out, manifest[name]["file"]), value)
  info = {**model.schema.to_dict(), "tasks": list(model.schema.tasks),
          "batch": {k: {"shape": ["batch", *v.shape[1:]], "dtype": str(v.dtype)}
                    for k, v in batch_spec(model.schema, 1).items()},
          "prediction_phases": prediction.prediction_phases(config, model), "source": source}
  for name, content in ((MANIFEST, manifest), (SCHEMA, info)):
    with open(os.path.join(out, name), "w") as f:
      json.dump(content, f, indent=2)
  return info


_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's folder (its checkpoints/).")
_OUT = flags.DEFINE_string("out", None, "Folder to write the serving artifact to.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)       # orbax logs every read at INFO
  try:
    info = export(_WORKDIR.value, _OUT.value)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(errors.EXIT_USER_ERROR)
  print(f"Exported {info['source']['model']} (step {info['source']['step']} of "
        f"{info['source']['workdir']}) to {_OUT.value}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(main)
