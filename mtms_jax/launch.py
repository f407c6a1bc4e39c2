"""Runs N local processes of one training command, as N hosts would (`make multihost`).

  python -m mtms_jax.launch --processes 2 --devices 2 -- --config experiments/quickstart.py:smoke \
      --workdir checkpoints/quickstart/multihost

Each process is `python -m mtms_jax.main <args> --config.parallel.mode=mesh` with a shared
coordinator on a free localhost port and its own process_id, and sees `--devices` CPU
devices (XLA_FLAGS); together they form one jax runtime over processes x devices devices,
the same program on every process, as on a cluster (docs/SCALING.md). If one process fails,
the others are stopped, and the exit status is the first failure's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import portpicker
from absl import app, flags

_PROCESSES = flags.DEFINE_integer("processes", 2, "Processes to start.")
_DEVICES = flags.DEFINE_integer("devices", 2, "CPU devices each process sees.")


def commands(args: list[str], processes: int, port: int) -> list[list[str]]:
  """The command line of each process."""
  shared = [sys.executable, "-m", "mtms_jax.main", *args, "--config.parallel.mode=mesh",
            f"--config.parallel.coordinator=localhost:{port}",
            f"--config.parallel.num_processes={processes}"]
  return [shared + [f"--config.parallel.process_id={i}"] for i in range(processes)]


def run(args: list[str], processes: int, devices: int) -> int:
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  running = [subprocess.Popen(c, env=env)
             for c in commands(args, processes, portpicker.pick_unused_port())]
  while any(p.poll() is None for p in running):
    if any(p.returncode for p in running):
      # A process left alone would wait on its failed peer's collectives forever.
      for p in running:
        p.terminate()
    time.sleep(0.2)
  status = next((p.returncode for p in running if p.returncode), 0)
  return status if status >= 0 else 128 - status


def main(argv):
  sys.exit(run(argv[1:], _PROCESSES.value, _DEVICES.value))


if __name__ == "__main__":
  app.run(main)
