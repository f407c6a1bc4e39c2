"""Markdown tables (GitHub's pipe tables): the one way reports and benchmarks write them.

Needs nothing beyond Python, so the peer benchmark's venv without jax imports it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
  """The header, the separator and `rows` (cells as text), one line each, no final newline.

  A row shorter than the header ends in one bare '|' per missing cell: a note across the
  rest of the row, '| esmm | failed ||||'.
  """
  lines = [_row(header), "|" + "---|" * len(header)]
  lines += [_row(cells) + "|" * (len(header) - len(cells)) for cells in rows]
  return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
  return "| " + " | ".join(cells) + " |"
