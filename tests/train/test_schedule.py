import pytest

from experiments import common
from mtms_jax.errors import UserError
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
