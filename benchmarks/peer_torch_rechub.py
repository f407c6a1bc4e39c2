r"""Training throughput of the peer library torch-rechub on mtms_jax's bench workload.

  python3 -m venv /tmp/peer && /tmp/peer/bin/pip install torch==2.13.0
  /tmp/peer/bin/pip install torch-rechub==0.9.0 numpy scipy
  /tmp/peer/bin/python benchmarks/peer_torch_rechub.py --models esmm,mmoe,ple,shared_bottom

The workload is the one of `python -m benchmarks.bench`, from the same generator
(`mtms_jax/data/zipf.py`, which needs no jax: this venv has none; the script puts the
repository on sys.path to import it). 1,000,000 rows, 2 scenes (60/40),
20 sparse fields of 100,000 Zipf(1.1) ids behind a random permutation, clicks about 4%,
conversions about 5% of clicks. The scene is one more sparse feature (2 ids), as a joint
model sees it. Embedding dim 16 everywhere; the models are torch-rechub's at the reference
sizes of its Ali-CCP example and of our bench: ESMM towers [16, 8]; MMoE 8 experts [16],
towers [8]; PLE 1 level, 2 task + 1 shared experts [16], towers [8]; Shared-Bottom bottom
[117], towers [8]. Tasks CTR and CVR (ESMM: labels cvr, ctr, ctcvr, trained on CTR + CTCVR).

Training is torch-rechub's own loop, `MTLTrainer.train_one_epoch` (its loss, BCE per task,
summed for ESMM and averaged over tasks for the others; zero_grad, backward, step), with
torch.optim.Adam(lr=1e-3) over all parameters (dense embedding gradients, the library's
default), batch 2048, torch.set_num_threads(2). Per model it prints examples/s, the median
over timed windows (each one train_one_epoch call) after warm-up, for
  steps   the training steps alone, cycling over 16 batches already built as tensors, and
  e2e     end to end: batches from a torch DataLoader over torch-rechub's TorchDataset of
          the numpy arrays (shuffle=True, num_workers=0, as its DataGenerator builds it),
and the process's peak RSS. Each model runs in its own process, so peak RSS is that model's.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import statistics
import sys
import time
from importlib import metadata

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import worker
from mtms_jax.data import zipf
from mtms_jax.report import markdown

MODELS = ("esmm", "mmoe", "ple", "shared_bottom")
BATCH, DIM, THREADS, STAGED, SEED = 2048, 16, 2, 16, 0


# ----------------------------------------------------------------------------------------
# Workload: mtms_jax's own generator
# ----------------------------------------------------------------------------------------
def make_workload(num_rows, num_scenes=2, vocab=100_000):
  """Columns ids [rows, fields] int32, scene int32, click and conversion float32."""
  arrays = zipf.generate(num_rows, num_scenes, vocab=vocab, seed=SEED)
  return {"ids": arrays["ids"], "scene": arrays["scene"].astype(np.int32),
          "click": arrays["click"].astype(np.float32),
          "conversion": arrays["conversion"].astype(np.float32), "vocab": vocab,
          "num_scenes": num_scenes}


# ----------------------------------------------------------------------------------------
# One model (in a worker process)
# ----------------------------------------------------------------------------------------
def build(name, data):
  """(model, task_types, x, y) for torch-rechub: x a dict of numpy columns, y [rows, tasks]."""
  from torch_rechub.basic.features import SparseFeature
  from torch_rechub.models.multi_task import ESMM, MMOE, PLE, SharedBottom
  num_fields = data["ids"].shape[1]
  x = {f"f{j}": np.ascontiguousarray(data["ids"][:, j]) for j in range(num_fields)}
  x["scene"] = data["scene"]
  fields = [SparseFeature(f"f{j}", data["vocab"], embed_dim=DIM) for j in range(num_fields)]
  scene = SparseFeature("scene", data["num_scenes"], embed_dim=DIM)
  click, conversion = data["click"], data["conversion"]
  if name == "esmm":  # labels in the order ESMM's outputs and the trainer expect
    half = num_fields // 2
    model = ESMM([scene] + fields[:half], fields[half:], cvr_params={"dims": [16, 8]},
                 ctr_params={"dims": [16, 8]})
    return model, ["classification"] * 3, x, np.stack([conversion, click, conversion], 1)
  features, tasks, towers = [scene] + fields, ["classification"] * 2, [{"dims": [8]}] * 2
  if name == "mmoe":
    model = MMOE(features, tasks, 8, expert_params={"dims": [16]}, tower_params_list=towers)
  elif name == "ple":
    model = PLE(features, tasks, n_level=1, n_expert_specific=2, n_expert_shared=1,
                expert_params={"dims": [16]}, tower_params_list=towers)
  else:
    model = SharedBottom(features, tasks, bottom_params={"dims": [117]},
                         tower_params_list=towers)
  return model, tasks, x, np.stack([click, conversion], 1)


def timed_windows(trainer, batches, warmup, windows, steps):
  """Examples/s and loss (tasks combined as the trainer does) of each window after warm-up."""
  weights = [0, 1, 1] if trainer.n_task == 3 else [1 / trainer.n_task] * trainer.n_task
  with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # its prints
    trainer.train_one_epoch(itertools.islice(batches, warmup))
    rates, losses = [], []
    for _ in range(windows):
      start = time.perf_counter()
      task_losses = trainer.train_one_epoch(itertools.islice(batches, steps))
      rates.append(steps * BATCH / (time.perf_counter() - start))
      losses.append(float(np.dot(weights, task_losses)))
  return rates, losses


def run_model(name, args):
  os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported
  import torch
  from torch.utils.data import DataLoader
  from torch_rechub.trainers import MTLTrainer
  from torch_rechub.utils.data import TorchDataset
  torch.set_num_threads(THREADS)
  torch.manual_seed(SEED)
  model, task_types, x, y = build(name, make_workload(args.rows))
  trainer = MTLTrainer(model, task_types, optimizer_params={"lr": 1e-3}, device="cpu")
  loader = DataLoader(TorchDataset(x, y), batch_size=BATCH, shuffle=True, num_workers=0)

  def epochs():
    while True:
      yield from loader

  staged = list(itertools.islice(epochs(), STAGED))
  step_rates, step_losses = timed_windows(trainer, itertools.cycle(staged), args.warmup,
                                          args.windows, args.window_steps)
  e2e_rates, e2e_losses = timed_windows(trainer, epochs(), args.warmup, args.windows,
                                        args.window_steps)
  steps, e2e = statistics.median(step_rates), statistics.median(e2e_rates)
  return {
      "model": name, "steps_examples_per_s": steps, "e2e_examples_per_s": e2e,
      "steps_windows": step_rates, "e2e_windows": e2e_rates,
      "steps_window_losses": step_losses, "e2e_window_losses": e2e_losses,
      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      "num_params": sum(p.numel() for p in model.parameters()),
      "torch_threads": torch.get_num_threads(), "load_avg": os.getloadavg(),
  }


# ----------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------
def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {MODELS}")
  p.add_argument("--rows", type=int, default=1_000_000)
  p.add_argument("--warmup", type=int, default=10)
  p.add_argument("--windows", type=int, default=7)
  p.add_argument("--window_steps", type=int, default=30)
  p.add_argument("--out", default="peer_bench.json")
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def format_table(results):
  header = ["model", "steps ex/s", "e2e ex/s", "e2e/steps", "peak RSS GiB",
            "steps loss, first -> last window", "e2e loss", "load"]
  return markdown.table(header, [table_row(r) for r in results])


def table_row(r):
  """One model's cells; a failed model: its name and why."""
  if "failed" in r:
    return [r["model"], r["failed"]]
  steps, e2e = r["steps_examples_per_s"], r["e2e_examples_per_s"]
  ls, le = r["steps_window_losses"], r["e2e_window_losses"]
  return [r["model"], f"{steps / 1e3:.1f}k", f"{e2e / 1e3:.1f}k", f"{e2e / steps:.2f}",
          f"{r['peak_rss_gib']:.2f}", f"{ls[0]:.4f} -> {ls[-1]:.4f}",
          f"{le[0]:.4f} -> {le[-1]:.4f}", f"{r['load_avg'][0]:.2f}"]


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  args = parse_args(argv)
  if args.worker:
    print(json.dumps(run_model(args.worker, args)))
    return
  results = []
  for name in worker.chosen(args.models, MODELS):
    print(f"{name} ...", file=sys.stderr, flush=True)
    results.append(worker.run_worker(
        name, [sys.executable, os.path.abspath(__file__), *argv, "--worker", name]))
  versions = {p: metadata.version(p) for p in ("torch", "torch-rechub", "numpy", "scipy")}
  report = {"library": "torch-rechub", "versions": versions, "cpu_count": os.cpu_count(),
            "batch": BATCH, "torch_threads": THREADS, "args": vars(args), "results": results}
  with open(args.out, "w") as f:
    json.dump(report, f, indent=2)
  print(f"torch-rechub {versions['torch-rechub']}, torch {versions['torch']}, {args.rows} rows, "
        f"batch {BATCH}, {THREADS} threads")
  print(format_table(results))


if __name__ == "__main__":
  main()
