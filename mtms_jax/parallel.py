"""Training on several devices and processes: `config.parallel`.

  mode            'none'  one device (the default).
                  'pmap'  `jax.pmap` over this process's devices (the design card's route):
                          each device runs `step.make_update(..., axis_name=AXIS)` on its
                          slice of the batch; the devices sum gradients and gather the rows
                          the row-wise table optimizers update.
                  'mesh'  `jax.jit` over a `jax.sharding.Mesh` with one axis, AXIS, over
                          every device of every process (what current JAX recommends): the
                          one-device update, the batch split on AXIS, XLA inserting the
                          collectives.
  table_sharding  'replicated'  every device holds every table.
                  'rows'  (mesh) tables and their row-wise optimizer state are split on
                          their row axis across the devices: a device holds 1/N of them,
                          and XLA routes each lookup and row update to the rows' owner.
  coordinator, num_processes, process_id
                  several processes (one a host, or local ones for tests) run the same
                  program: `jax.distributed.initialize` with these when num_processes > 1;
                  with -1, everything from what jax detects (TPU pods, SLURM, Open MPI);
                  with 0 (the default), the same when a SLURM or Open MPI job has more
                  than one task, else one process.

Every mode applies, step for step, the update one device computes on the whole batch
(row-wise optimizers included): results agree up to the order of float sums. Each process
reads its own share of every batch (`data.pipeline`) and places it on its devices in the
input pipeline's prefetch threads, so the step finds its batch on the devices
(`jax.make_array_from_process_local_data`) and no copy is implicit.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from mtms_jax import embedding, errors
from mtms_jax.errors import UserError

AXIS = "data"
MODES = ("none", "pmap", "mesh")
TABLE_SHARDINGS = ("replicated", "rows")
DEFAULTS = {"mode": "none", "table_sharding": "replicated", "coordinator": "",
            "num_processes": 0, "process_id": -1}


def settings(config: ml_collections.ConfigDict) -> dict:
  """config.parallel with defaults for the keys a config lacks (older experiment files)."""
  given = config.get("parallel") or {}
  return {k: given.get(k, v) for k, v in DEFAULTS.items()}


def check(config: ml_collections.ConfigDict):
  """Raises UserError for settings that no devices can take; makes no jax call, so it can
  run before `initialize`. A set num_processes > 1 also needs the coordinator (host:port of
  process 0) and this process's id."""
  s = settings(config)
  errors.expect_choice("config.parallel.mode", s["mode"], MODES)
  errors.expect_choice("config.parallel.table_sharding", s["table_sharding"], TABLE_SHARDINGS)
  if s["table_sharding"] == "rows" and s["mode"] != "mesh":
    raise UserError("config.parallel.table_sharding='rows' needs parallel.mode='mesh'")
  errors.expect(s["num_processes"] >= -1, "config.parallel.num_processes", s["num_processes"],
                "-1 (what jax detects), 0 (one unless a SLURM/MPI job has several) or >= 1")
  if s["num_processes"] > 1 and (not s["coordinator"] or s["process_id"] < 0):
    raise UserError(f"config.parallel.num_processes={s['num_processes']} needs "
                    "parallel.coordinator (host:port of process 0) and parallel.process_id")


def initialize(config: ml_collections.ConfigDict):
  """Joins the processes of a multi-process run; call before any other jax call.

  See the module docstring for num_processes, and `check` for what it needs.
  """
  check(config)
  s = settings(config)
  if s["num_processes"] > 1:
    jax.distributed.initialize(s["coordinator"], s["num_processes"], s["process_id"])
  elif s["num_processes"] == -1 or (s["num_processes"] == 0 and _multi_task_job()):
    jax.distributed.initialize()


def _multi_task_job() -> bool:
  return (int(os.environ.get("SLURM_NTASKS", "1")) > 1
          or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)


@dataclasses.dataclass(frozen=True)
class Plan:
  """How a run places its state and batches; built by `make_plan`."""
  mode: str
  table_sharding: str
  mesh: jax.sharding.Mesh

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  @property
  def split(self) -> NamedSharding:
    """The batch's (and row-sharded tables') leading axis split across the devices."""
    return NamedSharding(self.mesh, PartitionSpec(AXIS))

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size


def make_plan(config: ml_collections.ConfigDict) -> Plan:
  """The run's Plan; raises UserError for settings the devices or batch cannot take."""
  check(config)
  s = settings(config)
  mode, table_sharding = s["mode"], s["table_sharding"]
  if mode != "mesh" and jax.process_count() > 1:
    raise UserError(f"config.parallel.mode={mode!r} runs in one process; with "
                    f"{jax.process_count()} processes set parallel.mode='mesh'")
  devices = jax.local_devices()[:1] if mode == "none" else jax.devices()
  if config.batch_size % len(devices):
    raise UserError(f"config.batch_size={config.batch_size} does not split over "
                    f"{len(devices)} devices (parallel.mode={mode!r}); use a multiple of "
                    f"{len(devices)}")
  mesh = jax.sharding.Mesh(np.asarray(devices), (AXIS,), axis_types=(AxisType.Auto,))
  return Plan(mode, table_sharding, mesh)


def model_config(plan: Plan, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.model for the plan: on several devices scene_route 'auto' becomes 'xla' (the
  native kernel is a one-device CPU plugin; under the mesh XLA would gather the whole batch
  to each device to call it)."""
  if plan.mode == "none" or config.get("scene_route", "auto") != "auto":
    return config
  return ml_collections.ConfigDict({**config.to_dict(), "scene_route": "xla"})


def check_tables(plan: Plan, abstract_params):
  """Row-sharded tables need a row count the devices divide."""
  if plan.table_sharding != "rows":
    return
  for key, table in abstract_params["embedding"]["tables"].items():
    if table.shape[0] % plan.num_devices:
      raise UserError(f"config.parallel.table_sharding='rows': table {key} has "
                      f"{table.shape[0]} rows, not a multiple of {plan.num_devices} devices; "
                      "use table_sharding='replicated' or vocabularies that divide")


def state_shardings(plan: Plan, abstract_state):
  """Where each leaf of the train state lives: replicated, or, with table_sharding='rows',
  split on the row axis for the tables and every optimizer array over their rows."""
  def place(path, leaf):
    if plan.table_sharding == "rows" and embedding.in_tables(path) and leaf.ndim >= 1:
      return plan.split
    return plan.replicated
  return jax.tree_util.tree_map_with_path(place, abstract_state)


def with_shardings(abstract_state, shardings):
  """The abstract state (`jax.eval_shape`) carrying the shardings a restore places it in."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_state, shardings)


def compile_update(plan: Plan, make_update: Callable[[str | None], Callable], shardings):
  """The jitted (or pmapped) update of one phase; `make_update(axis_name)` builds its pure
  function (`step.make_update`), `shardings` that of the state (`state_shardings`)."""
  if plan.mode == "pmap":
    # The state goes in and comes out unmapped (replicated): every device applies the same
    # summed update, so the loop, evaluation and checkpoints see one ordinary state.
    return jax.pmap(make_update(AXIS), AXIS, in_axes=(None, 0), out_axes=(None, None),
                    devices=plan.mesh.devices.tolist(), donate_argnums=0)
  if plan.mode == "mesh":
    return jax.jit(make_update(None), in_shardings=(shardings, plan.split),
                   out_shardings=(shardings, plan.replicated), donate_argnums=0)
  return jax.jit(make_update(None), donate_argnums=0)


def log_dir(workdir: str) -> str:
  """Where this process writes its run files: the workdir for process 0, process<i>/ in it
  for the others, so that processes never write one file."""
  index = jax.process_index()
  return workdir if index == 0 else os.path.join(workdir, f"process{index}")


def process_share() -> tuple[int, int]:
  """(this process's index, process count): each process reads that share of a batch."""
  return jax.process_index(), jax.process_count()


def place_batch(plan: Plan, batch: dict) -> dict:
  """This process's rows of a batch, on its devices, as (slices of) the global batch.

  mesh: arrays of the global batch split on AXIS. pmap: a leading device axis, (N, B / N,
  ...), split the same way, which is what pmap maps over.
  """
  if plan.mode == "none":
    return jax.device_put(batch, plan.mesh.devices.flat[0])
  if plan.mode == "pmap":
    n = plan.num_devices
    batch = {k: v.reshape((n, v.shape[0] // n) + v.shape[1:]) for k, v in batch.items()}
  return {k: jax.make_array_from_process_local_data(plan.split, v) for k, v in batch.items()}
