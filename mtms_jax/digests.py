"""Content digests (SHA-256): a folder's files, written beside them and checked; arrays.

A checkpoint's files get theirs when its save completes (checkpoint.py), and are checked on
restore, so a checkpoint damaged in place after it was written (a flipped bit, a truncated
file) is told apart from a good one. A data set's columns get theirs for the run's data
fingerprint (data/fingerprint.py).

hashlib releases the GIL while it hashes a large buffer, so hashing in a background thread
does not hold up the training thread.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

SUMS = "sha256sums.json"             # {relative path: hex digest} of a folder's files
_CHUNK = 1 << 20


def file_digest(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def folder_digests(folder: str) -> dict[str, str]:
  """{path relative to `folder`: digest} of every file in the subfolders of `folder`.

  Only subfolders: the files at the top of a checkpoint step are orbax's own metadata,
  which it rewrites when it commits the save, after these are taken.
  """
  sums = {}
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    if root == folder:
      continue
    for name in sorted(files):
      path = os.path.join(root, name)
      sums[os.path.relpath(path, folder)] = file_digest(path)
  return sums


def write_sums(folder: str) -> None:
  """Writes `folder`/SUMS, atomically (a temporary file renamed), with its files' digests."""
  text = json.dumps(folder_digests(folder), indent=1, sort_keys=True)
  temporary = os.path.join(folder, SUMS + ".tmp")
  with open(temporary, "w") as f:
    f.write(text)
  os.replace(temporary, os.path.join(folder, SUMS))


def check_sums(folder: str) -> bool:
  """Raises ValueError naming the first file of `folder` whose digest is not the one
  written (or that is missing); False if `folder` has no SUMS (written before sums were),
  True if every file matches."""
  try:
    with open(os.path.join(folder, SUMS)) as f:
      sums = json.load(f)
  except FileNotFoundError:
    return False
  for name, digest in sums.items():
    path = os.path.join(folder, name)
    if not os.path.exists(path):
      raise ValueError(f"{name} is missing")
    if file_digest(path) != digest:
      raise ValueError(f"{name} does not match its SHA-256 in {SUMS} (changed after it was "
                       "written)")
  return True


def array_digest(array: np.ndarray, max_bytes: int = 1 << 30) -> tuple[str, bool]:
  """(SHA-256 of an array's dtype, shape and bytes, whether only sampled blocks were read).

  Up to `max_bytes` the whole array is hashed (in 1 MiB slices: a memory-mapped column is
  never copied whole); a bigger one by 1024 evenly spaced blocks that add up to `max_bytes`,
  so that a column of many GB costs what one of `max_bytes` does.
  """
  h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
  flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
  sampled = flat.size > max_bytes
  block = max_bytes // 1024 if sampled else _CHUNK
  starts = (np.linspace(0, flat.size - block, 1024).astype(np.int64) if sampled
            else range(0, flat.size, block))
  for start in starts:
    h.update(flat[start:start + block])
  return h.hexdigest(), sampled
