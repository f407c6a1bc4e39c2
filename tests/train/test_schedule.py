import numpy as np
import pytest

from experiments import common
from mtms_jax.data import Dataset
from mtms_jax.errors import UserError
from mtms_jax.eval import validation
from mtms_jax.train import schedule


def test_hot_start_days_run_the_history_phases_only():
  config = common.base_config("smoke")
  config.train_days = (0, 1, 2, 3, 4)
  config.schedule.history_days = 2
  config.schedule.history_order = ("embedding",)
  segments = schedule.make_schedule(config, {d: 2000 for d in config.train_days})
  assert [(s.day, s.phase) for s in segments] == [
      (0, "embedding"), (1, "embedding"), (2, "embedding"), (2, "ranking"),
      (3, "embedding"), (3, "ranking"), (4, "embedding"), (4, "ranking")]
  config.schedule.history_order = ()        # empty: history days run the usual order
  assert len(schedule.make_schedule(config, {d: 2000 for d in config.train_days})) == 10


@pytest.mark.parametrize("history_days, history_order, wrong", [
    (5, ("embedding",), "history_days"), (-1, (), "history_days"),
    (2, ("joint",), "history_order")])
def test_bad_hot_start_is_a_config_error(history_days, history_order, wrong):
  config = common.base_config("smoke")
  config.train_days = (0, 1, 2, 3, 4)
  config.schedule.history_days = history_days
  config.schedule.history_order = history_order
  with pytest.raises(UserError, match=f"config.schedule.{wrong}"):
    schedule.check(config.schedule, "config.schedule", len(config.train_days))


def test_held_out_ranking_rows_never_reach_the_embedding_phase(tiny_data):
  """Embedding rows (0.0, 0.8), ranking rows (0.8, 1.0): each phase's batches, what the loop
  hands its update, hold only its own share of each training day's rows, and all of it."""
  # Each row carries its index in its dense feature, so a batch says which rows it holds.
  columns = {**tiny_data.columns, "dense": np.arange(len(tiny_data), dtype=np.float32)[:, None]}
  data = Dataset(columns, tiny_data.schema, name="marked")
  config = common.base_config("smoke")
  config.phases.embedding.update(rows=(0.0, 0.8), steps=100)    # 3 epochs of its rows
  config.phases.ranking.update(rows=(0.8, 1.0), steps=30)
  days = validation.split(config, data)
  segments = schedule.make_schedule(config, {d: len(ds) for d, ds in days.train.items()})
  batches = schedule.Batches(segments, days.train, config.batch_size, config.seed, (0, 1),
                             place=lambda batch: batch)
  val = set(days.val.columns["dense"][:, 0].tolist())
  for day, rows in days.train.items():
    marks = rows.columns["dense"][:, 0]
    cut = round(len(marks) * 0.8)
    read = {phase: set() for phase in config.schedule.order}
    for index, segment in enumerate(segments):
      if segment.day == day:
        for batch in batches.iterator(index):
          read[segment.phase].update(batch["dense"][:, 0].tolist())
    assert read["embedding"] == set(marks[:cut].tolist())
    assert read["ranking"] == set(marks[cut:].tolist())
    assert not (read["embedding"] | read["ranking"]) & val      # nor a validation row
