r"""Training throughput on a generated workload shaped like Ali-CCP.

  make bench                                   # every model, default workload -> bench.json
  make bench ARGS="--models esmm,mtms_embedding --repeats 5"
  python -m benchmarks.bench --scenes 100 --vocab 20000 --models mtms_embedding,mtms_ranking

Default workload: 1,000,000 rows, 2 scenes (about 60/40), 20 sparse fields of 100,000 ids,
ids Zipf-distributed (exponent 1.1: a batch of 2048 touches about 17k distinct rows of its
40,960 lookups), clicks about 4%, conversions about 5% of clicks; embedding dim 16, batch
2048. Labels depend weakly on a few fields, so the loss falls while the bench runs.

Per model it prints training examples/s, the median over timed windows after warm-up, for
  steps   the jitted update alone, cycling over batches already on the device, and
  e2e     end to end: batches from the grain pipeline of training (`data.pipeline`),
          host to device transfer included,
the compile time of the update (with scene_route 'auto', the first process on a machine
also measures the routes there: models/routes.py), the route each per-scene layer took, and
the process's peak RSS. Each model runs `--repeats`
times, each time in a fresh process (so peak RSS is that model's); the table shows the
median over the repeats of those medians, and the slowest and fastest repeat. jax's default
backend runs everything: on a machine with a GPU the same command measures the GPU. The
table's header and bench.json say what it ran on (`mtms_jax.machine`: CPU model, vector
extensions, caches, backend, jax, jaxlib and XLA versions), so two machines' figures can be
told apart. `--scene_route` forces MTMS's route; `--kernel_isa avx2` runs the native kernel's
AVX2 code (built on first use) on an AVX-512 CPU, as an AVX2-only one would.

Models are `mtms_jax.models.<name>` modules, configured in BENCH_MODELS; one whose module is
missing is reported as such and skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import time

import jax
import ml_collections

from benchmarks import worker
from experiments import common
from mtms_jax import machine, models, optim
from mtms_jax.data import Dataset, pipeline, zipf
from mtms_jax.models import kernels, layers, routes
from mtms_jax.report import markdown
from mtms_jax.train import step as step_lib
from mtms_jax.train import train_state


# ----------------------------------------------------------------------------------------
# Workload
# ----------------------------------------------------------------------------------------
def make_workload(num_rows: int = 1_000_000, num_scenes: int = 2, num_fields: int = 20,
                  vocab: int = 100_000, zipf_exponent: float = 1.1, dim: int = 16,
                  click_rate: float = 0.04, conversion_rate: float = 0.05,
                  seed: int = 0) -> Dataset:
  """The workload as one day of `num_rows` training rows (`mtms_jax.data.zipf`)."""
  return zipf.load(num_rows, num_scenes, num_fields, vocab, zipf_exponent, click_rate,
                   conversion_rate, test_fraction=0.0, embedding_dim=dim, seed=seed)


# ----------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BenchModel:
  """A model config (config.model), the phase timed, its loss, and the target examples/s;
  of_esmm > 0: the target is that share of ESMM's steps examples/s in the same run (`target`
  is its fallback when ESMM is not measured)."""
  model: dict
  phase: str
  loss: str
  target: float
  of_esmm: float = 0.0


# MTMS at the baselines' scale: ESMM's towers per (scene, task); a ranking net whose first
# layer (4 components x 320 inputs -> 32) has about Shared-Bottom's first-layer weights.
MTMS = {"name": "mtms", "sharing": "none", "tower_hidden": (16, 8), "ranking_hidden": (32, 16),
        "aggregation": "concat", "ranking_scenes": ()}

# Target examples/s of the joint models (the issue's). The field's multi-scene models
# (STAR, PEPNet, M2M: issue 18) have no fixed figure: at least half of ESMM's.
JOINT_TARGETS = {"esmm": 200_000, "mmoe": 120_000, "ple": 120_000, "shared_bottom": 120_000}
MULTI_SCENE_TARGET_OF_ESMM = 0.5


def joint_model(name: str) -> BenchModel:
  """A field-standard model at the reference sizes of the experiments
  (experiments/common.JOINT_MODELS), trained as they train it: tables and network in one
  joint phase, ESMM on its own loss, the others on MTMS's."""
  loss = common.joint_sections(name)["phases"].joint.loss
  of_esmm = 0.0 if name in JOINT_TARGETS else MULTI_SCENE_TARGET_OF_ESMM
  target = JOINT_TARGETS.get(name, MULTI_SCENE_TARGET_OF_ESMM * JOINT_TARGETS["esmm"])
  return BenchModel({"name": name, **common.JOINT_MODELS[name]}, "joint", loss, target, of_esmm)


BENCH_MODELS = {
    **{name: joint_model(name) for name in common.JOINT_MODELS},
    "mtms_embedding": BenchModel(MTMS, "embedding", "ctr+cvr+ctcvr", 130_000),
    "mtms_ranking": BenchModel(MTMS, "ranking", "ctr+cvr+ctcvr", 150_000),
}


def model_config(spec: BenchModel, args) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(spec.model))
  if spec.model["name"] == "mtms":
    if args.ranking_scenes:
      config.ranking_scenes = tuple(int(s) for s in args.ranking_scenes.split(","))
    if args.tower_hidden is not None:
      config.tower_hidden = tuple(int(h) for h in args.tower_hidden.split(",") if h)
    if args.scene_route:
      config.scene_route = args.scene_route
  return config


def phase_config(spec: BenchModel, args) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "loss": spec.loss,
      "loss_weights": {},
      "optimizer": {"name": "adam", "learning_rate": 1e-3, "clip_norm": 0.0,
                    "embedding": args.embedding_optimizer,
                    "embedding_learning_rate": args.embedding_learning_rate},
  })


# ----------------------------------------------------------------------------------------
# Timing (one model, in a worker process)
# ----------------------------------------------------------------------------------------
def timed_windows(step, state, next_batch, warmup: int, windows: int, steps: int, batch_size):
  """Examples/s of each window of `steps` updates after `warmup`; returns (rates, state)."""
  for _ in range(warmup):
    state, measurements = step(state, next_batch())
  jax.block_until_ready(state)
  rates = []
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(steps):
      state, measurements = step(state, next_batch())
    jax.block_until_ready(state)
    rates.append(steps * batch_size / (time.perf_counter() - start))
  return rates, state, float(measurements["loss"])


def init_training(model, spec: BenchModel, args, seed: int):
  """(fresh train state, jitted update) of `model` in `spec`'s phase."""
  pconfig = phase_config(spec, args)
  params = model.init(jax.random.key(seed))
  tx = optim.make_phase_optimizer(pconfig.optimizer, params, model.phases[spec.phase])
  state = train_state.init_state(params, {spec.phase: tx})
  return state, step_lib.make_update_fn(model, tx, spec.phase, pconfig)


def run_model(name: str, args) -> dict:
  spec = BENCH_MODELS[name]
  data = make_workload(args.rows, args.scenes, args.fields, args.vocab, args.zipf, args.dim,
                       seed=args.seed)
  config = model_config(spec, args)
  try:
    model = models.get_model(data.schema, config)
  except ValueError as e:
    if "no module" not in str(e):
      raise
    return {"model": name, "skipped": str(e)}
  state, update = init_training(model, spec, args, args.seed)
  routes.TAKEN.clear()        # the routes of this model's update alone (compiled below)

  total = args.warmup + args.windows * args.window_steps
  batches = pipeline.train_iterator(data.columns, args.batch, 2 * total + args.staged,
                                    seed=args.seed)
  staged = [jax.device_put(next(batches)) for _ in range(args.staged)]
  start = time.perf_counter()
  compiled = update.lower(state, staged[0]).compile()
  compile_s = time.perf_counter() - start

  cycle = iter(range(10**12))
  step_rates, state, loss_steps = timed_windows(
      compiled, state, lambda: staged[next(cycle) % len(staged)], args.warmup, args.windows,
      args.window_steps, args.batch)
  e2e_rates, state, loss_e2e = timed_windows(
      compiled, state, lambda: next(batches), args.warmup, args.windows, args.window_steps,
      args.batch)
  steps = statistics.median(step_rates)
  e2e = statistics.median(e2e_rates)
  return {
      "model": name, "phase": spec.phase, "config": config.to_dict(),
      "routes": dict(routes.TAKEN), "kernels": kernels.loaded_library().name,
      "steps_examples_per_s": steps, "e2e_examples_per_s": e2e,
      "steps_windows": step_rates, "e2e_windows": e2e_rates,
      "compile_s": compile_s,
      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      "loss_after_steps": loss_steps, "loss_after_e2e": loss_e2e,
      "target_examples_per_s": spec.target, "target_of_esmm": spec.of_esmm,
      "load_avg": os.getloadavg(),
      "num_components": model.layout.num_components,
      "table_rows": model.layout.num_rows,
  }


# ----------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------
# The Makefile's GLIBC_TUNABLES for training (keep the two equal): malloc backs large tables
# with transparent huge pages, so random row access misses the TLB less. Measured with this
# bench at 100 scenes (80M table rows): MTMS embedding phase 65-72k examples/s, 50k without.
MALLOC_TUNABLES = "glibc.malloc.hugetlb=1"


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default=",".join(BENCH_MODELS),
                 help=f"comma-separated, from {list(BENCH_MODELS)}")
  p.add_argument("--rows", type=int, default=1_000_000)
  p.add_argument("--scenes", type=int, default=2)
  p.add_argument("--fields", type=int, default=20)
  p.add_argument("--vocab", type=int, default=100_000, help="ids (rows) per field")
  p.add_argument("--zipf", type=float, default=1.1)
  p.add_argument("--dim", type=int, default=16)
  p.add_argument("--batch", type=int, default=2048)
  p.add_argument("--embedding_optimizer", default="rowwise_adagrad",
                 choices=optim.EMBEDDING_OPTIMIZERS)
  p.add_argument("--embedding_learning_rate", type=float, default=0.05)
  p.add_argument("--ranking_scenes", default="",
                 help="MTMS ranking phase reads its own scene's components plus these "
                      "scenes' (comma-separated indices); empty reads every component")
  p.add_argument("--tower_hidden", default=None,
                 help="MTMS embedding-phase towers' hidden widths (comma-separated; '' for "
                      "linear towers), instead of 16,8")
  p.add_argument("--scene_route", default="", choices=("",) + layers.ROUTES,
                 help="MTMS's model.scene_route (default: the model's, 'auto')")
  p.add_argument("--kernel_isa", default="native", choices=list(kernels.ISA_FLAGS),
                 help="which build of the native kernels the workers load (avx2: built "
                      "into kernels.library('avx2') if missing)")
  p.add_argument("--warmup", type=int, default=10)
  p.add_argument("--windows", type=int, default=7)
  p.add_argument("--window_steps", type=int, default=50)
  p.add_argument("--repeats", type=int, default=3,
                 help="fresh worker processes per model; the table shows their median")
  p.add_argument("--staged", type=int, default=16, help="device batches cycled by 'steps'")
  p.add_argument("--malloc_tunables", default=MALLOC_TUNABLES,
                 help="GLIBC_TUNABLES of the workers (default: MALLOC_TUNABLES, as `make "
                      "experiment` sets them); '' for glibc's defaults")
  p.add_argument("--worker_timeout", type=float, default=0,
                 help="seconds a model's process may run before it is killed and reported "
                      "as failed (0: no limit)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="bench.json")
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def run_worker(name: str, argv: list[str], args) -> dict:
  """Runs one model in a fresh process; its last stdout line is the result as JSON."""
  env = dict(os.environ)
  inherited = env.get("GLIBC_TUNABLES", "")
  if args.malloc_tunables and args.malloc_tunables not in inherited:
    env["GLIBC_TUNABLES"] = ":".join(t for t in (inherited, args.malloc_tunables) if t)
  if args.kernel_isa != "native":
    env["MTMS_JAX_KERNELS"] = str(kernels.library(args.kernel_isa))
  return worker.run_worker(
      name, [sys.executable, "-m", "benchmarks.bench", *argv, "--worker", name], env,
      timeout=args.worker_timeout or None)


def median_of_repeats(runs: list[dict]) -> dict:
  """One model's result over its repeats: the median of each repeat's median examples/s,
  the slowest and fastest repeat, the median of each repeat's end-to-end / steps ratio
  (within one process both ran on the same host moment), the largest peak RSS, the median
  compile time."""
  timed = [r for r in runs if "steps_examples_per_s" in r]
  if len(timed) < len(runs):
    return next(r for r in runs if "steps_examples_per_s" not in r)
  result = dict(timed[0])
  for key in ("steps_examples_per_s", "e2e_examples_per_s"):
    values = [r[key] for r in timed]
    result[key] = statistics.median(values)
    result[key.replace("_per_s", "_range")] = (min(values), max(values))
  result["e2e_over_steps"] = statistics.median(
      r["e2e_examples_per_s"] / r["steps_examples_per_s"] for r in timed)
  result["compile_s"] = statistics.median(r["compile_s"] for r in timed)
  result["peak_rss_gib"] = max(r["peak_rss_gib"] for r in timed)
  result["load_avg"] = max(r["load_avg"][0] for r in timed)
  result["repeats"] = timed
  return result


def set_relative_targets(results: list[dict]) -> None:
  """A target that is a share of ESMM's becomes that share of ESMM's steps examples/s
  measured in this run, side by side (the same host and hour), where ESMM ran."""
  esmm = next((r for r in results if r["model"] == "esmm" and "steps_examples_per_s" in r), None)
  for r in results:
    if esmm is not None and r.get("target_of_esmm", 0) > 0:
      r["target_examples_per_s"] = r["target_of_esmm"] * esmm["steps_examples_per_s"]
      r["target_basis"] = f"{r['target_of_esmm']:g}x esmm"


def format_table(results: list[dict]) -> str:
  header = ["model", "phase", "steps ex/s (range)", "e2e ex/s (range)", "e2e/steps, median",
            "compile s", "peak RSS GiB", "target", "max load", "routes"]
  return markdown.table(header, [table_row(r) for r in results])


def table_row(r: dict) -> list[str]:
  """One model's cells; a skipped or failed model: its name and why."""
  if "steps_examples_per_s" not in r:
    return [r["model"], r.get("skipped") or r.get("failed")]
  k = lambda v: f"{v / 1e3:.1f}k"  # noqa: E731
  steps, e2e, target = (r["steps_examples_per_s"], r["e2e_examples_per_s"],
                        r["target_examples_per_s"])
  (s_lo, s_hi), (e_lo, e_hi) = r["steps_examples_range"], r["e2e_examples_range"]
  return [r["model"], r["phase"], f"{k(steps)} ({k(s_lo)}-{k(s_hi)})",
          f"{k(e2e)} ({k(e_lo)}-{k(e_hi)})", f"{r['e2e_over_steps']:.2f}",
          f"{r['compile_s']:.1f}", f"{r['peak_rss_gib']:.2f}",
          f"{k(target)}{' = ' + r['target_basis'] if 'target_basis' in r else ''} "
          f"{'met' if steps >= target else 'missed'}",
          f"{r['load_avg']:.2f}", routes_cell(r["routes"])]


def routes_cell(taken: dict) -> str:
  """'ctr kernel, cvr kernel': each per-scene layer's route (its name before the shapes);
  '-' for a model without one."""
  return ", ".join(f"{layer.split(':')[0]} {route}" for layer, route in taken.items()) or "-"


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  args = parse_args(argv)
  if args.worker:
    print(json.dumps(run_model(args.worker, args)))
    return
  library = kernels.library(args.kernel_isa)
  if args.kernel_isa != "native" and (not library.exists() or
                                      library.stat().st_mtime < kernels.SOURCE.stat().st_mtime):
    kernels.build(isa=args.kernel_isa)
  results = []
  for name in worker.chosen(args.models, BENCH_MODELS):
    runs = []
    for repeat in range(args.repeats):
      print(f"{name} {repeat + 1}/{args.repeats} ...", file=sys.stderr, flush=True)
      runs.append(run_worker(name, argv, args))
    results.append(median_of_repeats(runs))
  set_relative_targets(results)
  info = machine.describe()
  report = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__, "cpu_count": os.cpu_count(), "machine": info,
            "kernels": library.name, "args": vars(args), "results": results}
  with open(args.out, "w") as f:
    json.dump(report, f, indent=2)
  print(f"{machine.summary(info)}; kernels {library.name}")
  print(f"backend {report['backend']}, {args.rows} rows, {args.scenes} scenes, {args.fields} "
        f"fields x {args.vocab} ids, batch {args.batch}, embedding optimizer "
        f"{args.embedding_optimizer}; median of {args.repeats} processes a model, each the "
        f"median of {args.windows} windows of {args.window_steps} steps")
  print(format_table(results))


if __name__ == "__main__":
  main()
