"""What this process runs on: the CPU (model, vector extensions, caches), jax's backend and
versions. Speed depends on all of them, so the scene routes' cache is keyed by them
(models/routes.py) and `make bench` reports them beside its figures."""

from __future__ import annotations

import functools
import os
import pathlib
import platform

import jax
import jaxlib

# The vector extensions the native kernels and XLA:CPU's code generation care about.
VECTOR_EXTENSIONS = ("avx2", "fma", "avx512f")
_CPU_CACHES = pathlib.Path("/sys/devices/system/cpu/cpu0/cache")


@functools.cache
def _cpuinfo() -> dict[str, str]:
  """The first processor's entries of /proc/cpuinfo ({} where there is none)."""
  try:
    text = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return {}
  entries = {}
  for line in text.split("\n\n", 1)[0].splitlines():
    key, _, value = line.partition(":")
    entries[key.strip()] = value.strip()
  return entries


def cpu_model() -> str:
  """E.g. 'AMD EPYC 7B13' ('model name' of /proc/cpuinfo, else the platform's name)."""
  return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def vector_extensions() -> tuple[str, ...]:
  """Which of VECTOR_EXTENSIONS the CPU has (its /proc/cpuinfo flags)."""
  flags = set(_cpuinfo().get("flags", "").split())
  return tuple(e for e in VECTOR_EXTENSIONS if e in flags)


def cache_sizes() -> dict[str, str]:
  """The first core's caches, e.g. {'L1d': '48K', 'L1i': '64K', 'L2': '2048K', 'L3':
  '32768K'} (the kernel's sysfs names; {} where sysfs has none)."""
  sizes = {}
  for index in sorted(_CPU_CACHES.glob("index*")):
    try:
      level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
    except OSError:
      continue
    suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
    sizes[f"L{level}{suffix}"] = size
  return sizes


def accelerator() -> str:
  """jax's default backend and the kind of its first device, e.g. 'gpu NVIDIA H100'."""
  return f"{jax.default_backend()} {jax.devices()[0].device_kind}"


def describe() -> dict:
  """Everything above, plus the versions: jaxlib carries its own XLA, named by the commit
  jaxlib was built from."""
  return {"cpu_model": cpu_model(), "vector_extensions": list(vector_extensions()),
          "caches": cache_sizes(), "cpu_count": os.cpu_count(),
          "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
          "jax": jax.__version__, "jaxlib": jaxlib.__version__,
          "xla_commit": getattr(jaxlib.version, "_git_hash", "unknown")}


def summary(info: dict) -> str:
  """`describe()` in one line, for a table's header."""
  caches = " ".join(f"{k} {v}" for k, v in info["caches"].items())
  extensions = "+".join(info["vector_extensions"]) or "no AVX2"
  return (f"{info['cpu_model']} ({info['cpu_count']} CPUs; {extensions}; {caches}); "
          f"{info['backend']} {info['device_kind']}; jax {info['jax']}, jaxlib "
          f"{info['jaxlib']} (XLA {info['xla_commit'][:12]})")
