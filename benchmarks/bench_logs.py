"""Bigger than RAM: training from a prepared cache read memory-mapped (`make bench-logs`).

  make bench-logs DIR=/a/disk/with/space ARGS="--rows 50000000"

1. Writes DIR/logs/: `--rows` training rows in Parquet files of `--file_rows`, and a valid
   and a test file of `--eval_rows`: the `make bench` workload (mtms_jax/bench_workload.py:
   20 Zipf id fields, 2 scenes, click and conversion), generated a file at a time, and
   DIR/logs.yaml, a schema file over them. Skipped when present.
2. Prepares them into DIR/logs.cache (mtms_jax/data/prepare.py), timed.
3. Times the MTMS embedding phase (bench.BENCH_MODELS['mtms_embedding']) in two fresh
   worker processes, each reading its batches through the grain pipeline
   (mtms_jax/data/pipeline.py): 'mmap' from the memory-mapped cache (every training row),
   'ram' from an in-memory copy of its first `--ram_rows` rows, `--repeats` times each,
   alternating (the CPU is shared and noisy: medians are compared). Each reports its
   examples/s (median of `--windows` windows) and its peak anonymous memory (RssAnon of
   /proc/self/status, sampled every 50 ms): the memory-mapped columns are file pages, which
   the kernel can drop, not anonymous memory.
Writes the results to `--out` (bench_logs.json) and prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import worker
from mtms_jax.data import zipf
from mtms_jax.data.logs import prepare, schema_file

FIELDS = 20


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------
def write_logs(folder: Path, args) -> Path:
  """Parquet files of the bench workload and their schema file; returns the schema file."""
  logs = folder / "logs"
  logs.mkdir(parents=True, exist_ok=True)
  files = [(f"train-{i:03d}", args.file_rows)
           for i in range(-(-args.rows // args.file_rows))]
  files[-1] = (files[-1][0], args.rows - args.file_rows * (len(files) - 1))
  files += [("valid", args.eval_rows), ("test", args.eval_rows)]
  for i, (name, rows) in enumerate(files):
    path = logs / f"{name}.parquet"
    if path.exists():
      continue
    columns = zipf.generate(rows, num_fields=FIELDS, vocab=args.vocab, seed=i)
    table = pa.table({"click": columns["click"].astype(np.int8),
                      "conversion": columns["conversion"].astype(np.int8),
                      "scene": columns["scene"].astype(np.int8),
                      **{f"f{j}": columns["ids"][:, j] for j in range(FIELDS)}})
    pq.write_table(table, path.with_suffix(".tmp"), row_group_size=1 << 20)
    os.replace(path.with_suffix(".tmp"), path)
    print(f"wrote {path} ({rows} rows)", file=sys.stderr)
  schema = folder / "logs.yaml"
  schema.write_text(
      "files: {train: logs/train-*.parquet, valid: logs/valid.parquet, test: logs/test.parquet}\n"
      "scene: {column: scene}\nlabels: {click: click, conversion: conversion}\nsparse:\n"
      + "".join(f"  - {{name: f{j}, vocab: {args.vocab}}}\n" for j in range(FIELDS)))
  return schema


# ----------------------------------------------------------------------------------------
# Worker: one mode, in its own process
# ----------------------------------------------------------------------------------------
class PeakRssAnon:
  """The largest RssAnon of this process seen by a thread reading it every `every` s."""

  def __init__(self, every: float = 0.05):
    self.peak = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
    self._thread.start()

  def _run(self, every: float):
    while not self._stop.is_set():
      self.peak = max(self.peak, rss_anon())
      time.sleep(every)

  def stop(self) -> float:
    self._stop.set()
    self._thread.join()
    return max(self.peak, rss_anon()) / 2**30


def rss_anon() -> int:
  """Anonymous resident memory of this process, in bytes."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("RssAnon:"):
        return int(line.split()[1]) * 1024
  raise RuntimeError("no RssAnon in /proc/self/status")


def run_mode(schema: str, mode: str, args) -> dict:
  # jax and the models only in workers: the driver stays small and starts nothing.
  from benchmarks import bench
  from mtms_jax import models
  from mtms_jax.data import logs, pipeline

  memory = PeakRssAnon()
  data = logs.load(schema)
  columns = data.days(0).columns                   # a view of the cache: day 0 is contiguous
  if mode == "ram":
    columns = {k: np.array(v[:args.ram_rows]) for k, v in columns.items()}
  spec, bench_args = bench.BENCH_MODELS["mtms_embedding"], bench.parse_args([])
  model = models.get_model(data.schema, bench.model_config(spec, bench_args))
  state, update = bench.init_training(model, spec, bench_args, seed=0)
  total = args.warmup + args.windows * args.window_steps
  batches = pipeline.train_iterator(columns, args.batch, total, seed=0)
  rates, _, loss = bench.timed_windows(update, state, lambda: next(batches), args.warmup,
                                       args.windows, args.window_steps, args.batch)
  return {"mode": mode, "rows": len(columns["scene"]), "examples_per_s": statistics.median(rates),
          "windows": rates, "loss": loss, "peak_rss_anon_gib": memory.stop(),
          "load_avg": os.getloadavg()}


# ----------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------
def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python -m benchmarks.bench_logs", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dir", required=True, help="where the logs and their cache go")
  p.add_argument("--rows", type=int, default=50_000_000, help="training rows")
  p.add_argument("--file_rows", type=int, default=5_000_000)
  p.add_argument("--eval_rows", type=int, default=100_000)
  p.add_argument("--ram_rows", type=int, default=2_000_000,
                 help="rows of the in-memory copy the 'ram' mode reads")
  p.add_argument("--vocab", type=int, default=10_000, help="ids per field")
  p.add_argument("--batch", type=int, default=2048)
  p.add_argument("--warmup", type=int, default=10)
  p.add_argument("--windows", type=int, default=7)
  p.add_argument("--window_steps", type=int, default=50)
  p.add_argument("--repeats", type=int, default=3, help="worker processes per mode")
  p.add_argument("--out", default="bench_logs.json")
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  folder = Path(args.dir)
  if args.worker:
    print(json.dumps(run_mode(str(folder / "logs.yaml"), args.worker, args)))
    return
  schema = write_logs(folder, args)
  start = time.perf_counter()
  manifest = prepare.prepare(schema_file.load(schema))
  results = {"rows": manifest["rows"], "prepare_s": time.perf_counter() - start,
             "cache_gib": sum(f.stat().st_size for f in (folder / "logs.cache").iterdir())
             / 2**30}
  argv = list(argv if argv is not None else sys.argv[1:])
  runs = {"mmap": [], "ram": []}
  for _ in range(args.repeats):
    for mode, mode_runs in runs.items():
      mode_runs.append(worker.run_worker(
          mode, [sys.executable, "-m", "benchmarks.bench_logs", *argv, "--worker", mode]))
  for mode, mode_runs in runs.items():
    rates = [r["examples_per_s"] for r in mode_runs if "examples_per_s" in r]
    results[mode] = {"examples_per_s": statistics.median(rates) if rates else None,
                     "peak_rss_anon_gib": max(r.get("peak_rss_anon_gib", 0) for r in mode_runs),
                     "runs": mode_runs}
  if results["mmap"]["examples_per_s"] and results["ram"]["examples_per_s"]:
    results["mmap_over_ram"] = (results["mmap"]["examples_per_s"]
                                / results["ram"]["examples_per_s"])
  Path(args.out).write_text(json.dumps(results, indent=2))
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
