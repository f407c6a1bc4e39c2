"""Native CPU kernels, as XLA FFI custom calls: `scene_matmul` (per-scene weights).

The kernels are C++ (`scene_matmul.cc`), compiled for this machine by `python -m
mtms_jax.models.kernels` (`make setup` runs it) into `_build/`. Where the library is missing (no
compiler at setup) or jax runs on another backend, `available()` is False and the models
use their XLA routes, which the tests also compare the kernels against.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import pathlib
import subprocess

import jax
import jax.numpy as jnp

SOURCE = pathlib.Path(__file__).with_name("scene_matmul.cc")
LIBRARY = pathlib.Path(__file__).with_name("_build") / "libscene_matmul.so"


def build(compiler: str = "g++") -> pathlib.Path:
  """Compiles the kernels for this CPU (-march=native) into LIBRARY."""
  LIBRARY.parent.mkdir(exist_ok=True)
  command = [compiler, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC",
             "-isystem", jax.ffi.include_dir(), str(SOURCE), "-o", str(LIBRARY)]
  subprocess.run(command, check=True)
  return LIBRARY


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
  if jax.default_backend() != "cpu" or not LIBRARY.exists():
    return False
  if LIBRARY.stat().st_mtime < SOURCE.stat().st_mtime:
    raise RuntimeError(f"{LIBRARY} is older than {SOURCE}; rebuild it with `python -m "
                       "mtms_jax.models.kernels` (or `make setup`)")
  library = ctypes.cdll.LoadLibrary(str(LIBRARY))
  for name in ("SceneMatmul", "SceneMatmulTransposed", "SceneOuter"):
    jax.ffi.register_ffi_target(f"mtms_{name}", jax.ffi.pycapsule(getattr(library, name)),
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
