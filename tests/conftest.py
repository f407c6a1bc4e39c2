"""Shared fixtures. Tests run on the CPU; nothing here needs an accelerator."""

import pathlib

import pytest

from mtms_jax.data import synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_data():
  """Two scenes, four days of 3000 rows: enough rows for every slice to hold both labels."""
  return synthetic.load(rows_per_day=3000, num_users=60, num_ads=30, num_user_groups=5,
                        num_ad_groups=5, embedding_dim=4, seed=1)
