"""Schema files and preparation: every bad input is one line naming file, column and row,
exit 2, nothing written; the cache is atomic, skipped when up to date, hashed stably."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtms_jax import cli
from mtms_jax.data import logs
from mtms_jax.data.logs import prepare, read, schema_file
from mtms_jax.errors import UserError

HEADER = "clk,buy,user,ad,price,channel\n"
GOOD_ROWS = ["1,1,3,a7,2.5,feed\n", "0,0,4,b2,0.0,search\n", "1,0,0,a7,1.0,feed\n"]
SCHEMA = """files: {{train: train.csv, test: test.csv}}
format: csv
scene: {{column: channel{scene_values}}}
labels: {{click: clk, conversion: buy}}
{extra}sparse:
  - {{name: user, vocab: 10}}
  - {{name: ad, hash_buckets: 100}}
dense:
  - {{name: price, transform: log1p}}
"""


def write(folder, train=None, schema_extra="", scene_values=""):
  """A CSV schema over train.csv (good rows unless given) and test.csv (good rows)."""
  (folder / "train.csv").write_text(HEADER + "".join(GOOD_ROWS) if train is None else train)
  (folder / "test.csv").write_text(HEADER + "".join(GOOD_ROWS))
  path = folder / "s.yaml"
  path.write_text(SCHEMA.format(extra=schema_extra, scene_values=scene_values))
  return path


def fails(path, capsys, *expected):
  """Runs the preparation command; checks exit 2, one line naming `expected`, no cache."""
  assert prepare.main([str(path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err.startswith("error: "), err
  for text in expected:
    assert text in err, err
  assert not any(p.name.startswith("s.cache") for p in path.parent.iterdir())
  return err


def bad_row(row):
  return HEADER + GOOD_ROWS[0] + row + GOOD_ROWS[1]


@pytest.mark.parametrize("train, expected", [
    (HEADER.replace(",price", "") + "1,1,3,a7,feed\n", ("train.csv", "missing column 'price'")),
    (bad_row("1,0,x9,a7,1.0,feed\n"), ("train.csv", "data row 1", "'user'", "integer", "x9")),
    (bad_row("2,0,3,a7,1.0,feed\n"), ("data row 1", "'clk'", "0 or 1, got 2.0")),
    (bad_row("1,0,-1,a7,1.0,feed\n"), ("data row 1", "'user'", "[0, 10)", "-1")),
    (bad_row("1,0,10,a7,1.0,feed\n"), ("data row 1", "'user'", "[0, 10)", "10")),
    (bad_row("1,0,,a7,1.0,feed\n"), ("data row 1", "'user'", "nan")),
    (bad_row("1,0,3,a7,nan,feed\n"), ("data row 1", "'price'", "finite", "nan")),
    (bad_row("1,0,3,a7,-2,feed\n"), ("data row 1", "'price'", "log1p")),
    ("", ("train.csv", "Empty CSV")),
    (HEADER, ("train.csv", "no data rows")),
    (HEADER + GOOD_ROWS[0] + "1,0,3", ("train.csv", "line 3", "3 fields, expected 6")),
])
def test_bad_csv_values(tmp_path, capsys, train, expected):
  fails(write(tmp_path, train), capsys, *expected)


def test_conversion_without_click_is_counted_then_dropped_on_request(tmp_path, capsys):
  rows = HEADER + GOOD_ROWS[0] + "0,1,3,a7,1.0,feed\n" * 2 + GOOD_ROWS[1]
  fails(write(tmp_path, rows), capsys, "train.csv, data row 1, column 'buy'", "in 2 rows",
        "conversion_without_click: drop")
  path = write(tmp_path, rows, schema_extra="conversion_without_click: drop\n")
  assert prepare.main([str(path)]) == 0
  manifest = prepare.read_manifest(tmp_path / "s.cache")
  assert manifest["dropped"] == 2 and manifest["rows_per_day"] == {"0": 2, "1": 3}


def test_unknown_scene_when_scenes_are_listed(tmp_path, capsys):
  path = write(tmp_path, bad_row("1,0,3,a7,1.0,video\n"), scene_values=", values: [feed, search]")
  fails(path, capsys, "data row 1", "'channel'", "'video'", "['feed', 'search']")


@pytest.mark.parametrize("extra, expected", [
    ("colour: red\n", "unknown key 'colour'"),
    ("split: {test_days: 1}\n", "split: unknown key 'test_days'"),
    ("format: json\n", "format: 'json'"),
])
def test_schema_file_mistakes(tmp_path, capsys, extra, expected):
  fails(write(tmp_path, schema_extra=extra), capsys, "s.yaml", expected)


def test_sparse_field_mistakes(tmp_path, capsys):
  path = write(tmp_path)
  path.write_text(path.read_text().replace("vocab: 10", "vocab: 10, bucket: 3"))
  fails(path, capsys, "s.yaml: sparse[0]: unknown key 'bucket'")
  path.write_text(path.read_text().replace("vocab: 10, bucket: 3", "vocab: 10, hash_buckets: 9"))
  fails(path, capsys, "sparse[0] (user): give exactly one of vocab")


def parquet_schema(folder, table, chunk_rows_note=""):
  pq.write_table(table, folder / "train.parquet")
  pq.write_table(table, folder / "test.parquet")
  path = folder / "s.yaml"
  path.write_text("files: {train: train.parquet, test: test.parquet}\n"
                  "labels: {click: clk, conversion: buy}\n"
                  "sparse: [{name: user, vocab: 10}]\ndense: [{name: price}]\n")
  return path


def table(n=10, **columns):
  base = {"clk": np.ones(n, np.int64), "buy": np.zeros(n, np.int64),
          "user": np.arange(n) % 10, "price": np.linspace(0, 1, n)}
  return pa.table({**base, **columns})


def test_a_csv_non_number_is_found_in_its_chunk_by_a_few_casts(tmp_path, capsys, monkeypatch):
  """Issue 20, case 7: the failing chunk, then its row by halving, not a cast per value
  (30 s at 200k rows before); a missing id just before it is not taken for it."""
  monkeypatch.setattr(read, "CSV_BLOCK_BYTES", 1 << 12)     # chunks of about 200 rows
  rows = [GOOD_ROWS[i % 3] for i in range(3000)]
  rows[2498], rows[2500] = "1,0,,a7,1.0,feed\n", "1,0,x9,a7,1.0,feed\n"
  casts, cast = [], read.pc.cast
  monkeypatch.setattr(read.pc, "cast", lambda *args, **kw: casts.append(1) or cast(*args, **kw))
  fails(write(tmp_path, HEADER + "".join(rows)), capsys,
        "train.csv, data row 2500, column 'user': expected an integer, got 'x9'")
  assert len(casts) < 300


def test_parquet_nan_is_reported_at_its_real_row(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(read, "CHUNK_ROWS", 4)      # the bad row lies in the third chunk
  price = np.linspace(0, 1, 10)
  price[9] = np.nan
  fails(parquet_schema(tmp_path, table(price=price)), capsys,
        "train.parquet, data row 9, column 'price'", "nan")


def test_parquet_wrong_type_and_truncated_file(tmp_path, capsys):
  path = parquet_schema(tmp_path, table(user=[f"u{i}" for i in range(10)]))
  fails(path, capsys, "train.parquet, column 'user'", "type string, expected integers")
  path = parquet_schema(tmp_path, table())
  data = (tmp_path / "train.parquet").read_bytes()
  (tmp_path / "train.parquet").write_bytes(data[:len(data) // 2])
  fails(path, capsys, "train.parquet", "truncated")


def test_cache_is_skipped_when_up_to_date_and_rebuilt_when_the_schema_changes(tmp_path):
  path = write(tmp_path)
  first = prepare.prepare(schema_file.load(path))
  mtime = (tmp_path / "s.cache" / prepare.MANIFEST).stat().st_mtime_ns
  assert prepare.prepare(schema_file.load(path)) == first
  assert (tmp_path / "s.cache" / prepare.MANIFEST).stat().st_mtime_ns == mtime
  path.write_text(path.read_text().replace("transform: log1p", "transform: none"))
  second = prepare.prepare(schema_file.load(path))
  assert second["schema"] != first["schema"]
  data = logs.load(str(path))
  np.testing.assert_allclose(data.columns["dense"][:3, 0], [2.5, 0.0, 1.0])
  assert isinstance(data.columns["ids"].base, np.memmap)      # a view of the file
  assert data.schema.scenes == ("feed", "search")
  np.testing.assert_array_equal(data.columns["scene"][:3], [0, 1, 0])


def test_a_failed_rebuild_keeps_the_old_cache_and_leaves_no_temporary_folder(tmp_path):
  path = write(tmp_path)
  prepare.prepare(schema_file.load(path))
  (tmp_path / f"s.cache{prepare._TMP}999").mkdir()      # left by a killed run
  write(tmp_path, bad_row("1,0,3,a7,nan,feed\n"))
  with pytest.raises(UserError):
    prepare.prepare(schema_file.load(path))
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("s.cache")) == ["s.cache"]
  assert prepare.read_manifest(tmp_path / "s.cache")["rows"] == 6


def test_a_full_disk_while_preparing_names_the_file_and_leaves_no_temporary_folder(
    tmp_path, monkeypatch):
  path = write(tmp_path)
  # Every cache column written to /dev/full, where a write fails as on a full disk.
  monkeypatch.setattr(prepare, "open", lambda file, mode: open("/dev/full", mode),
                      raising=False)
  with pytest.raises(OSError) as full:
    prepare.prepare(schema_file.load(path))
  assert cli.disk_full_message(full.value).startswith("no space left on the disk of /dev/full")
  assert not any(p.name.startswith("s.cache") for p in tmp_path.iterdir())


def test_a_cache_of_another_schema_file_is_an_error(tmp_path):
  path = write(tmp_path)
  prepare.prepare(schema_file.load(path))
  other = tmp_path / "other.yaml"
  other.write_text(path.read_text() + "cache: s.cache\n")
  with pytest.raises(UserError, match="prepared from another schema file"):
    prepare.prepare(schema_file.load(other))


def test_hashing_is_stable_fnv1a_and_splitmix64():
  # FNV-1a 64 of b"a" and of b"" (the published test vectors).
  np.testing.assert_array_equal(read.fnv1a(pa.array(["a", ""], pa.large_string())),
                                np.array([0xAF63DC4C8601EC8C, 0xCBF29CE484222325], np.uint64))
  ids = read.hash_ids(pa.array(["x", None, "x", "yy"]), 7)
  assert ids[1] == 0 and ids[0] == ids[2] and np.all((ids[[0, 3]] >= 1) & (ids[[0, 3]] < 7))
  sliced = read.hash_ids(pa.array(["q", "x", "yy"]).slice(1), 7)   # offsets of a slice
  np.testing.assert_array_equal(sliced, ids[[0, 3]])
  ints = read.hash_ids(pa.array([5, 5, 6]), 1000)
  assert ints[0] == ints[1] != ints[2]


def test_days_come_from_the_day_column(tmp_path):
  pq.write_table(table(day=np.array([3, 3, 3, 4, 4, 4, 5, 5, 5, 5])), tmp_path / "all.parquet")
  path = tmp_path / "d.yaml"
  path.write_text("files: all.parquet\nday: day\nlabels: {click: clk, conversion: buy}\n"
                  "sparse: [{name: user, vocab: 10}]\n")
  schema = schema_file.load(path)
  manifest = prepare.prepare(schema)
  assert manifest["rows_per_day"] == {"3": 3, "4": 3, "5": 4}
  assert logs.days(schema, manifest) == ((3, 4), 5)
  assert json.loads((tmp_path / "d.cache" / "manifest.json").read_text())["scenes"] == ["all"]


def test_files_by_split_and_a_day_column_are_one_too_many_ways_to_give_the_days(tmp_path,
                                                                              capsys):
  """Were both taken, the days would come from the column while the validation day stayed
  the split's day 1 (issue 20's silently wrong days)."""
  path = write(tmp_path, train=HEADER.replace("\n", ",day\n") + "1,1,3,a7,2.5,feed,0\n")
  for split in ("valid", "test"):          # all with a day column: the old code took them
    (tmp_path / f"{split}.csv").write_text((tmp_path / "train.csv").read_text())
  path.write_text(path.read_text().replace("test: test.csv", "valid: valid.csv, test: test.csv")
                  .replace("sparse:", "day: day\nsparse:"))
  fails(path, capsys, "s.yaml: files gives the days by split", "day: day names a column",
        "give one of the two")


def test_one_file_with_a_test_fraction_holds_out_its_last_rows(tmp_path):
  pq.write_table(table(), tmp_path / "all.parquet")
  path = tmp_path / "f.yaml"
  path.write_text("files: all.parquet\nsplit: {test_fraction: 0.3}\nlabels: {click: clk}\n"
                  "sparse: [{name: user, vocab: 10}]\n")
  schema = schema_file.load(path)
  manifest = prepare.prepare(schema)
  assert manifest["rows_per_day"] == {"0": 7, "1": 3}
  assert "conversion" not in manifest["columns"] and schema.tasks == ("ctr",)
  np.testing.assert_array_equal(logs.load(str(path)).columns["day"], [0] * 7 + [1] * 3)
  path.write_text(path.read_text().replace("0.3", "1.5"))
  with pytest.raises(UserError, match="test_fraction=1.5"):
    schema_file.load(path)


def test_a_split_of_the_cache_is_a_view_of_the_file_not_a_copy(tmp_path):
  data = logs.load(str(write(tmp_path)))
  for day in (0, 1):
    rows = data.days(day)
    assert len(rows) == 3
    for name, column in rows.columns.items():
      assert column.size == 0 or np.shares_memory(column, data.columns[name]), name
