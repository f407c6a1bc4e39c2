"""The tasks, one vocabulary for losses, metrics, schemas, reports and run kinds.

  ctr    p(click)                                         predicted: a logit of its own
  cvr    p(conversion | click), on clicked rows only      predicted: a logit of its own
  ctcvr  p(click & conversion) = ctr x cvr                derived from the two

Data without conversions (CTR-only logs) has the task ctr alone.
"""

from __future__ import annotations

CTR, CVR, CTCVR = "ctr", "cvr", "ctcvr"
PREDICTED = (CTR, CVR)
CTR_ONLY = (CTR,)
ALL = (CTR, CVR, CTCVR)


def with_derived(predicted: tuple[str, ...]) -> tuple[str, ...]:
  """The tasks a model predicting `predicted` has metrics and losses for: ctcvr comes with
  cvr."""
  return predicted + ((CTCVR,) if CVR in predicted else ())
