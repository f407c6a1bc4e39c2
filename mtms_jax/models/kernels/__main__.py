"""`python -m mtms_jax.models.kernels [--isa native|avx2] [compiler]`: builds the native
kernels for this CPU (`--isa avx2`: its AVX2 code alone, into `library('avx2')`)."""

import argparse

from mtms_jax.models.kernels import ISA_FLAGS, build

parser = argparse.ArgumentParser(prog="python -m mtms_jax.models.kernels")
parser.add_argument("--isa", default="native", choices=list(ISA_FLAGS))
parser.add_argument("compiler", nargs="?", default="g++")
args = parser.parse_args()
print(f"built {build(args.compiler, args.isa)}")
