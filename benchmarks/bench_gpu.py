r"""The GPU run of `make bench`: each model at large batches, within a time budget.

  make bench-gpu                  # on a machine with an NVIDIA GPU: its own .venv-gpu, then this
  python -m benchmarks.bench_gpu --dry-run          # the plan, nothing run

`make bench-gpu` (benchmarks/bench_gpu.sh) installs the pinned CUDA jax build and runs this
script, which runs `benchmarks.bench` at each of `--batches` for ESMM, MMoE and MTMS's two
phases with scene_route 'ragged' (the grouped matmul of GPUs), then MTMS's phases again with
'xla', one process a model, and writes one JSON (`--out`) and a markdown table (`--table`):
steps examples/s (end to end) per model, route and batch. The runs share `--budget_s`
seconds: a run that would start after it is reported as not run, and a model's process is
killed after `--run_timeout_s`, so the whole script ends at most that much after the
budget. On the CPU it refuses to run unless `--cpu` is given (the tests run a tiny plan that
way).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax

from benchmarks import bench
from mtms_jax import machine
from mtms_jax.report import markdown

BATCHES = (2048, 16384, 65536)
# (models, scene_route): 'ragged' reaches the GPU's grouped matmul; 'xla' is what MTMS
# takes on several devices, and 'auto' measures these two (models/routes.py).
RUNS = (("esmm,mmoe,mtms_embedding,mtms_ranking", "ragged"),
        ("mtms_embedding,mtms_ranking", "xla"))
# Short windows: at 65536 rows a step, 3 windows of 20 steps are 4M examples a window.
TIMING = ["--repeats", "1", "--warmup", "5", "--windows", "3", "--window_steps", "20",
          "--staged", "8"]
# The workload's rows: 8 staged batches of the largest batch, distinct.
ROWS = 8 * max(BATCHES)


def plan(batches, models: str, bench_args: list[str]) -> list[list[str]]:
  """The `benchmarks.bench` arguments of every run, one model a run (so the budget is
  checked before each model), in order; `models`: those to keep."""
  keep = set(models.split(","))
  return [["--models", name, "--scene_route", route, "--batch", str(batch), "--rows",
           str(ROWS), *TIMING, *bench_args]
          for batch in batches for run_models, route in RUNS
          for name in run_models.split(",") if name in keep]


def run_plan(argvs, budget_s: float, run_timeout_s: float) -> list[dict]:
  """Each run's bench report, or {'argv', 'not_run'} once the budget is spent."""
  start, reports = time.monotonic(), []
  for argv in argvs:
    if time.monotonic() - start > budget_s:
      reports.append({"argv": argv, "not_run": f"time budget of {budget_s:g} s spent"})
      continue
    with tempfile.TemporaryDirectory() as folder:
      out = os.path.join(folder, "bench.json")
      bench.main([*argv, "--worker_timeout", str(run_timeout_s), "--out", out])
      with open(out) as f:
        reports.append({"argv": argv, **json.load(f)})
  return reports


def _option(argv, name):
  return argv[argv.index(name) + 1]


def table(reports: list[dict]) -> str:
  """Rows: model and route; columns: batch sizes; cells: steps examples/s (end to end)."""
  batches = sorted({int(_option(r["argv"], "--batch")) for r in reports})
  cells: dict[tuple[str, str], dict[int, str]] = {}
  for report in reports:
    batch, route = int(_option(report["argv"], "--batch")), _option(report["argv"],
                                                                     "--scene_route")
    name = _option(report["argv"], "--models")
    result = next(iter(report.get("results", ())), {})
    row = (name, route if name.startswith("mtms") else "-")
    cells.setdefault(row, {})[batch] = _cell(result, report.get("not_run"))
  header = ["model", "scene_route"] + [f"batch {b}" for b in batches]
  return markdown.table(header, [[*row, *(by_batch.get(b, "") for b in batches)]
                                 for row, by_batch in cells.items()])


def _cell(result: dict, not_run: str | None) -> str:
  if not_run:
    return "not run"
  if "steps_examples_per_s" not in result:
    return result.get("failed") or result.get("skipped") or "missing"
  return (f"{result['steps_examples_per_s'] / 1e6:.2f}M "
          f"({result['e2e_examples_per_s'] / 1e6:.2f}M)")


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batches", default=",".join(map(str, BATCHES)))
  p.add_argument("--models", default=RUNS[0][0], help="keep only these (comma-separated)")
  p.add_argument("--budget_s", type=float, default=300,
                 help="no run starts after this many seconds")
  p.add_argument("--run_timeout_s", type=float, default=60,
                 help="a model's process is killed after this many seconds")
  p.add_argument("--bench_args", default="", help="more `benchmarks.bench` arguments")
  p.add_argument("--out", default="bench_gpu.json")
  p.add_argument("--table", default="bench_gpu.md")
  p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
  p.add_argument("--cpu", action="store_true", help="allow a run without a GPU")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  argvs = plan([int(b) for b in args.batches.split(",")], args.models, args.bench_args.split())
  if args.dry_run:
    for a in argvs:
      print("python -m benchmarks.bench", " ".join(a))
    return
  if jax.default_backend() != "gpu" and not args.cpu:
    sys.exit(f"bench_gpu: jax runs on {jax.default_backend()}, not a GPU "
             "(make bench-gpu installs the CUDA build)")
  reports = run_plan(argvs, args.budget_s, args.run_timeout_s)
  info = machine.describe()
  text = f"{machine.summary(info)}\n\n{table(reports)}"
  with open(args.out, "w") as f:
    json.dump({"machine": info, "runs": reports}, f, indent=2)
  with open(args.table, "w") as f:
    f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
