"""`python -m mtms_jax.models.kernels [compiler]`: builds the native kernels for this CPU."""

import sys

from mtms_jax.models.kernels import build

print(f"built {build(*sys.argv[1:])}")
