"""`python -m mtms_jax.kernels [compiler]`: builds the native kernels for this CPU."""

import sys

from mtms_jax.kernels import build

print(f"built {build(*sys.argv[1:])}")
