r"""Serving latency of an exported model (`mtms_jax.export`) on this machine's CPU.

  python -m mtms_jax.serving.bench --exported exported/NAME [--batches 1,64,512,1000]

Times `serving.load(DIR).score(batch)` end to end, as a serving process calls it (the batch
checks, the host-to-device copy, the graph, the copy back): for each batch size (candidates
scored in one call; 1000 is one request's candidate list), `--calls` timed calls after
`--warmup` untimed ones (the first compiles the graph for that size), in `--rounds` rounds;
p50 and p99 are the medians over rounds of each round's percentiles, so one noisy round on a
shared CPU moves them little. Candidates are random valid ids of every scene.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from absl import app, flags, logging

from mtms_jax import errors, serving
from mtms_jax.report import markdown
from mtms_jax.serving import export

_EXPORTED = flags.DEFINE_string("exported", None, "Folder written by mtms_jax.export.")
_BATCHES = flags.DEFINE_list("batches", ["1", "64", "512", "1000"], "Candidates a call.")
_CALLS = flags.DEFINE_integer("calls", 200, "Timed calls a round and batch size.")
_WARMUP = flags.DEFINE_integer("warmup", 10, "Untimed calls before each round.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Rounds; p50/p99 are medians over them.")
_JSON = flags.DEFINE_string("json", "", "Also write the results to this JSON file.")


def random_batch(scorer: serving.Scorer, n: int, rng: np.random.Generator) -> dict:
  vocab = np.array([f["vocab_size"] for f in scorer.schema["sparse"]])
  return {"ids": (rng.random((n, len(vocab))) * vocab).astype(np.int32),
          "dense": rng.standard_normal((n, len(scorer.schema["dense"]))).astype(np.float32),
          "scene": rng.integers(0, len(scorer.scenes), n).astype(np.int32)}


def time_calls(scorer: serving.Scorer, batch: dict, calls: int, warmup: int) -> np.ndarray:
  """Milliseconds of each of `calls` score() calls, after `warmup` untimed ones."""
  for _ in range(warmup):
    scorer.score(batch)
  times = np.empty(calls)
  for i in range(calls):
    start = time.perf_counter()
    scorer.score(batch)
    times[i] = time.perf_counter() - start
  return 1000.0 * times


def measure(scorer: serving.Scorer, batches, calls: int, warmup: int, rounds: int) -> list:
  """[{batch, p50_ms, p99_ms, candidates_per_s}] per batch size."""
  rng = np.random.default_rng(0)
  rows = []
  for n in batches:
    batch = random_batch(scorer, n, rng)
    per_round = [np.percentile(time_calls(scorer, batch, calls, warmup), [50, 99])
                 for _ in range(rounds)]
    p50, p99 = np.median(per_round, axis=0)
    rows.append({"batch": n, "p50_ms": float(p50), "p99_ms": float(p99),
                 "candidates_per_s": float(n / p50 * 1000.0)})
  return rows


def format_table(rows: list) -> str:
  return markdown.table(
      ["candidates a call", "p50", "p99", "candidates/s at p50"],
      [[str(r["batch"]), f"{r['p50_ms']:.3f} ms", f"{r['p99_ms']:.3f} ms",
        f"{r['candidates_per_s']:,.0f}"] for r in rows])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  if not os.path.exists(os.path.join(_EXPORTED.value, export.SCHEMA)):
    print(f"error: --exported={_EXPORTED.value!r} holds no exported model; write one with "
          "python -m mtms_jax.export --workdir checkpoints/NAME --out exported/NAME",
          file=sys.stderr)
    sys.exit(errors.EXIT_USER_ERROR)
  scorer = serving.load(_EXPORTED.value)
  rows = measure(scorer, [int(b) for b in _BATCHES.value], _CALLS.value, _WARMUP.value,
                 _ROUNDS.value)
  print(f"{_EXPORTED.value}: {scorer.schema['source']['model']}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  print(format_table(rows))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"exported": _EXPORTED.value, "load_average": os.getloadavg(), "rows": rows},
                f, indent=2)


if __name__ == "__main__":
  flags.mark_flags_as_required(["exported"])
  app.run(main)
