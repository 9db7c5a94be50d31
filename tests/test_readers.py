"""Every reader yields the same records, each located by source and row."""

import csv
import json

import pytest

from prefalign.data.errors import DataError
from prefalign.data.readers import read_records

from .conftest import PAIRS, write_jsonl


def records(source):
    return [r.fields for r in read_records(str(source))]


def test_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", PAIRS)
    recs = list(read_records(str(path)))
    assert [r.fields for r in recs] == PAIRS
    assert recs[3].ref.row == 3 and recs[3].ref.source == str(path)


def test_json_list_and_wrapped(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(PAIRS))
    (tmp_path / "b.json").write_text(json.dumps({"data": PAIRS}))
    assert records(tmp_path / "a.json") == PAIRS == records(tmp_path / "b.json")


def test_csv_with_json_cells(tmp_path):
    path = tmp_path / "d.csv"
    rows = [{"prompt": json.dumps([{"role": "user", "content": "hi"}]),
             "chosen": json.dumps([{"role": "assistant", "content": "hello"}]),
             "rejected": json.dumps([{"role": "assistant", "content": "go"}])}]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["prompt", "chosen", "rejected"])
        writer.writeheader()
        writer.writerows(rows)
    (rec,) = records(path)
    assert rec["prompt"] == [{"role": "user", "content": "hi"}]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(PAIRS), tmp_path / "d.parquet")
    assert records(tmp_path / "d.parquet") == PAIRS


def test_datasets_save_to_disk_and_load_dataset_on_local_path(tmp_path):
    import datasets

    datasets.Dataset.from_list(PAIRS).save_to_disk(str(tmp_path / "saved"))
    assert records(tmp_path / "saved") == PAIRS
    folder = tmp_path / "hubstyle"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", PAIRS)
    assert records(folder) == PAIRS  # datasets.load_dataset(<local folder>, split="train")


def test_bad_json_line_is_located(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(PAIRS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"d.jsonl, line 2: not valid JSON"):
        records(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        records(tmp_path / "nope.jsonl")


def test_non_object_row(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([PAIRS[0], [1, 2]]))
    with pytest.raises(DataError, match=r"d.json, record 2: expected a record"):
        records(tmp_path / "d.json")


def test_unsupported_file_type(tmp_path):
    (tmp_path / "d.txt").write_text("hello")
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        records(tmp_path / "d.txt")


def test_load_dataset_failure_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="datasets.load_dataset could not read it"):
        records(tmp_path / "no-such-folder")
