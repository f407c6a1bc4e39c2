"""Native CPU kernels, as XLA FFI custom calls: `scene_matmul` (per-scene weights).

The kernels are C++ (`scene_matmul.cc`), compiled for this machine by `python -m
mtms_jax.models.kernels` (`make setup` runs it) into `_build/`, with vectors as wide as the
CPU's widest extension (AVX-512 or AVX2). `--isa avx2` builds the AVX2 code on an AVX-512
machine too (`library("avx2")`), to measure it there (`make bench ARGS="--kernel_isa avx2"`);
the environment variable MTMS_JAX_KERNELS names the library to load instead of the native
one. Where the library is missing (no compiler at setup) or jax runs on another backend,
`available()` is False and the models use their XLA routes, which the tests also compare the
kernels against.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pathlib
import subprocess

import jax
import jax.numpy as jnp

SOURCE = pathlib.Path(__file__).with_name("scene_matmul.cc")
LIBRARY = pathlib.Path(__file__).with_name("_build") / "libscene_matmul.so"
# Code generation per instruction set: 'native' everything this CPU has; 'avx2' the same
# without AVX-512, as an AVX2-only CPU (AMD EPYC before Zen 4) runs it.
ISA_FLAGS = {"native": ["-march=native"],
             "avx2": ["-march=native", "-mavx2", "-mfma", "-mno-avx512f"]}


def library(isa: str = "native") -> pathlib.Path:
  """Where `build(isa=isa)` puts the library: LIBRARY for 'native'."""
  return LIBRARY if isa == "native" else LIBRARY.with_name(f"libscene_matmul_{isa}.so")


def build(compiler: str = "g++", isa: str = "native",
          target: pathlib.Path | None = None) -> pathlib.Path:
  """Compiles the kernels for this CPU (ISA_FLAGS[isa]) into `target` (default
  `library(isa)`). A vector type the flags cannot hold in registers is an error (-Wpsabi),
  not a slow emulation."""
  target = target or library(isa)
  target.parent.mkdir(parents=True, exist_ok=True)
  command = [compiler, "-O3", *ISA_FLAGS[isa], "-Werror=psabi", "-std=c++17", "-shared",
             "-fPIC", "-isystem", jax.ffi.include_dir(), str(SOURCE), "-o", str(target)]
  subprocess.run(command, check=True)
  return target


def loaded_library() -> pathlib.Path:
  """The library `available()` loads: $MTMS_JAX_KERNELS, else LIBRARY."""
  return pathlib.Path(os.environ.get("MTMS_JAX_KERNELS") or LIBRARY)


_disabled = False


def available() -> bool:
  """Whether the kernels are built, loaded and registered for jax's default backend, and
  not `disabled()`."""
  return not _disabled and _load()


@contextlib.contextmanager
def disabled():
  """Inside, `available()` is False, so the models trace their pure-XLA routes: a program
  exported for serving (mtms_jax/export.py) then holds no custom call that another process
  would have to register first."""
  global _disabled
  saved, _disabled = _disabled, True
  try:
    yield
  finally:
    _disabled = saved


@functools.cache
def _load() -> bool:
  path = loaded_library()
  if jax.default_backend() != "cpu" or not path.exists():
    return False
  if path.stat().st_mtime < SOURCE.stat().st_mtime:
    raise RuntimeError(f"{path} is older than {SOURCE}; rebuild it with `python -m "
                       "mtms_jax.models.kernels` (or `make setup`)")
  shared = ctypes.cdll.LoadLibrary(str(path))
  for name in ("SceneMatmul", "SceneMatmulTransposed", "SceneOuter"):
    jax.ffi.register_ffi_target(f"mtms_{name}", jax.ffi.pycapsule(getattr(shared, name)),
                                platform="cpu")
  return True


def _matmul(x: jax.Array, kernels: jax.Array, scene: jax.Array) -> jax.Array:
  out = jax.ShapeDtypeStruct((x.shape[0], kernels.shape[-1]), jnp.float32)
  return jax.ffi.ffi_call("mtms_SceneMatmul", out)(x, kernels, scene.astype(jnp.int32))


def _matmul_transposed(dy: jax.Array, kernels: jax.Array, scene: jax.Array) -> jax.Array:
  """dy (B, H) times kernels[scene]^T -> (B, I); I a multiple of 16, else via a transpose."""
  if kernels.shape[1] % 16:
    return _matmul(dy, kernels.transpose(0, 2, 1), scene)
  out = jax.ShapeDtypeStruct((dy.shape[0], kernels.shape[1]), jnp.float32)
  return jax.ffi.ffi_call("mtms_SceneMatmulTransposed", out)(dy, kernels,
                                                             scene.astype(jnp.int32))


@jax.custom_vjp
def scene_matmul(x: jax.Array, kernels: jax.Array, scene: jax.Array) -> jax.Array:
  """x (B, I) float32, kernels (S, I, H) float32, scene (B,) int -> (B, H):
  row b times kernels[scene[b]]. Needs `available()`."""
  return _matmul(x, kernels, scene)


def _scene_matmul_fwd(x, kernels, scene):
  return _matmul(x, kernels, scene), (x, kernels, scene)


def _scene_matmul_bwd(residuals, dy):
  x, kernels, scene = residuals
  dx = _matmul_transposed(dy, kernels, scene)
  out = jax.ShapeDtypeStruct(kernels.shape, jnp.float32)
  dkernels = jax.ffi.ffi_call("mtms_SceneOuter", out)(x, dy, scene.astype(jnp.int32))
  return dx, dkernels, None


scene_matmul.defvjp(_scene_matmul_fwd, _scene_matmul_bwd)
