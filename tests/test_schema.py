import numpy as np
import pytest

from mtms_jax.schema import DenseField, FeatureSchema, SparseField


def _schema():
  return FeatureSchema(sparse=(SparseField("user", 10, 4), SparseField("ad", 5, 8)),
                       dense=(DenseField("x"),), scenes=("feed", "search"))


def _columns(n=4):
  return {"ids": np.zeros((n, 2), np.int32), "dense": np.zeros((n, 1), np.float32),
          "scene": np.array([0, 1, 0, 1][:n], np.int32), "click": np.array([1, 0, 1, 0.]),
          "conversion": np.array([1, 0, 0, 0.]), "day": np.zeros(n, np.int32)}


def test_json_round_trip(tmp_path):
  schema = _schema()
  (tmp_path / "s.json").write_text(schema.to_json())
  assert FeatureSchema.load(tmp_path / "s.json") == schema


def test_valid_columns_pass():
  _schema().validate(_columns())


@pytest.mark.parametrize("column,row,value,message", [
    ("ids", 2, 10, "row 2, sparse field 'user': id 10 outside [0, 10)"),
    ("scene", 3, 2, "row 3, column 'scene': 2 outside [0, 1]"),
    ("click", 1, 0.5, "row 1, column 'click': 0.5 is not 0 or 1"),
    ("conversion", 1, 1.0, "row 1: conversion without a click"),
])
def test_bad_value_names_row_and_column(column, row, value, message):
  cols = _columns()
  if column == "ids":
    cols["ids"][row, 0] = value
  else:
    cols[column][row] = value
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                     .replace("[", r"\[")):
    _schema().validate(cols, source="logs.csv")


def test_missing_column_and_bad_shape():
  cols = _columns()
  del cols["day"]
  with pytest.raises(ValueError, match=r"logs.csv: missing columns \['day'\]"):
    _schema().validate(cols, source="logs.csv")
  cols = _columns()
  cols["ids"] = np.zeros((4, 3), np.int32)
  with pytest.raises(ValueError, match=r"column 'ids' has shape \(4, 3\), expected \(4, 2\)"):
    _schema().validate(cols)


def test_schema_rejects_duplicate_names_and_empty_vocab():
  with pytest.raises(ValueError, match="repeated"):
    FeatureSchema(sparse=(SparseField("a", 3), SparseField("a", 3)))
  with pytest.raises(ValueError, match="vocab_size"):
    SparseField("a", 0)
