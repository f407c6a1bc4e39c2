"""Which route a per-scene layer takes under scene_route 'auto': the fastest, measured.

Which way of meeting per-scene weights is fastest depends on the CPU (the native kernel is
2.2x slower than XLA on an AVX2-only AMD EPYC and the fastest route on an AVX-512 Xeon),
the backend, the versions and the shapes, so no fixed rule holds everywhere. `fastest`
times each candidate's forward and backward on the layer's real shapes, once per machine:
the choice is kept in `cache_path()`, keyed by all of the above, and read back by later
processes. The routes compute the same function (tests/models/test_layers.py), so the
choice changes speed, not results beyond float rounding.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
import time
from collections.abc import Callable, Sequence

import jax
import jaxlib
from absl import logging

from mtms_jax import machine
from mtms_jax.models import kernels

# Below this batch a layer's time is mostly fixed overhead and the measurement would cost
# more than it saves: layers take the rule of thumb (SceneMLP).
MIN_MEASURED_BATCH = 1024
ROUNDS = 7          # candidates timed in turn, so a burst of load hits every candidate
STEPS = 10          # timed calls a round, after one untimed
# A measured lead smaller than this share is noise on a shared machine (three candidates
# within 15% of each other at load 7 on 2 cores, their order changing run to run): the
# rule of thumb's route (`preferred`) is kept unless another beats it by more.
MARGIN = 0.1

# The route each per-scene layer took when it was last traced: {layer: route}, what `make
# bench` reports; layers are named by their module path and shapes.
TAKEN: dict[str, str] = {}
_CHOSEN: dict[str, str] = {}    # this process's choices, so each is measured or read once


def cache_path() -> pathlib.Path:
  """$XDG_CACHE_HOME/mtms_jax/scene_routes.json (~/.cache where XDG_CACHE_HOME is unset)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "mtms_jax" / "scene_routes.json"


def cache_key(shapes: str, candidates: Sequence[str]) -> str:
  """The machine, backend and versions, XLA's flags (--xla_cpu_max_isa=AVX2 makes XLA's
  code that of an AVX2-only CPU), the native kernels' build (native or AVX2 code), the
  layer's shapes and the candidates."""
  return " | ".join([machine.cpu_model(), "+".join(machine.vector_extensions()),
                     machine.accelerator(), f"XLA_FLAGS {os.environ.get('XLA_FLAGS', '')}",
                     f"jax {jax.__version__}",
                     f"jaxlib {jaxlib.__version__}", f"kernels {kernels.loaded_library().name}",
                     shapes, ",".join(candidates)])


def _read_cache() -> dict:
  """The cached choices; {} if the file is missing or not a JSON object of routes."""
  try:
    choices = json.loads(cache_path().read_text())
  except (OSError, ValueError):
    return {}
  if not isinstance(choices, dict):
    return {}
  return {k: v for k, v in choices.items() if isinstance(v, dict) and "route" in v}


def _write_cache(key: str, entry: dict) -> None:
  """Adds `entry` under `key`, replacing the file in one step (a reader sees the old file
  or the new one); a cache that cannot be written is only a cost, never an error."""
  path = cache_path()
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    choices = {**_read_cache(), key: entry}
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
      json.dump(choices, f, indent=1, sort_keys=True)
    os.replace(f.name, path)
  except OSError as e:
    logging.warning("scene routes: cannot write %s (%s)", path, e)


def time_candidates(programs: dict[str, Callable[[], object]]) -> dict[str, float]:
  """Seconds of one call of each program: the fastest of ROUNDS rounds of STEPS calls that
  take the candidates in turn (other processes only ever slow a round down); the first call
  of each (its compile) is not timed."""
  for program in programs.values():
    jax.block_until_ready(program())
  rounds = {name: [] for name in programs}
  for _ in range(ROUNDS):
    for name, program in programs.items():
      start = time.perf_counter()
      for _ in range(STEPS):
        out = program()
      jax.block_until_ready(out)
      rounds[name].append((time.perf_counter() - start) / STEPS)
  return {name: min(times) for name, times in rounds.items()}


def pick(seconds: dict[str, float], preferred: str) -> str:
  """The fastest route, or `preferred` where none beats it by more than MARGIN."""
  best = min(seconds, key=seconds.get)
  return best if seconds[best] < (1 - MARGIN) * seconds[preferred] else preferred


def fastest(shapes: str, candidates: Sequence[str], preferred: str,
            program: Callable[[str], Callable[[], object]]) -> str:
  """The fastest of `candidates` for a layer of `shapes` (a description that tells layers
  apart; `preferred` one of them, see `pick`): cached, else each `program(route)`'s calls
  timed outside any trace (`time_candidates`), the choice logged and cached."""
  if len(candidates) == 1:
    return candidates[0]
  key = cache_key(shapes, candidates)
  if key in _CHOSEN:
    return _CHOSEN[key]
  cached = _read_cache().get(key)
  if cached and cached["route"] in candidates:
    route, how = cached["route"], f"cached in {cache_path()}"
  else:
    start, taken = time.perf_counter(), dict(TAKEN)
    # Run now, even inside the step's trace; the timed programs put their random inputs on
    # the device, which the train loop's transfer guard (train/loop.py) would refuse.
    with jax.ensure_compile_time_eval(), jax.transfer_guard("allow"):
      seconds = time_candidates({r: program(r) for r in candidates})
    TAKEN.clear()                            # the timed programs' layers took no route
    TAKEN.update(taken)
    route = pick(seconds, preferred)
    how = (", ".join(f"{r} {1e3 * s:.2f} ms" for r, s in seconds.items()) +
           f"; measured in {time.perf_counter() - start:.1f} s")
    _write_cache(key, {"route": route, "ms": {r: 1e3 * s for r, s in seconds.items()}})
  logging.warning("scene_route auto: %r for %s (%s)", route, shapes, how)
  _CHOSEN[key] = route
  return route
