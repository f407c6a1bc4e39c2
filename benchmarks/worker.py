"""The benchmarks' worker-process protocol, without jax.

`make bench`, `make bench-logs` and the peer benchmark (`benchmarks/peer_torch_rechub.py`,
which runs in a venv without jax) run each model in a fresh process whose last stdout line
is its result as JSON; all of them train on `mtms_jax.data.zipf.generate`'s arrays.
"""

from __future__ import annotations

import json
import os
import subprocess

# Workers run as `python -m benchmarks.<name>`, so from the repository's root.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def chosen(models: str, known) -> list[str]:
  """The model names of a comma-separated --models; SystemExit naming the unknown ones."""
  names = [n for n in models.split(",") if n]
  unknown = sorted(set(names) - set(known))
  if unknown:
    raise SystemExit(f"--models: unknown {unknown}; known {list(known)}")
  return names


def run_worker(name: str, command: list[str], env: dict | None = None,
               timeout: float | None = None) -> dict:
  """Runs `command` (a worker for model `name`) in a fresh process; returns its last stdout
  line as JSON, or {'model', 'failed'} when it exits with an error or runs past `timeout`
  seconds (then it is killed)."""
  try:
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env,
                          cwd=REPO, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"model": name, "failed": f"timed out after {timeout:g} s"}
  if proc.returncode != 0:
    return {"model": name, "failed": f"exit status {proc.returncode}"}
  return json.loads(proc.stdout.strip().splitlines()[-1])
