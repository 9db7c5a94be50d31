"""Read raw records from JSONL, JSON, Parquet and CSV files and from `datasets` (disk folders or hub names)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prefalign.data.errors import DataError, RowRef


@dataclass(frozen=True)
class RawRecord:
    ref: RowRef
    fields: dict


BOM = b"\xef\xbb\xbf"  # spreadsheet programs write it; left in, it would rename the first column


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(where, None, f"not UTF-8 text (byte {exc.start + 1} of the line is {raw[exc.start:exc.start + 1]!r}); "
                        "save the file as UTF-8", "bad_encoding") from None


def _parse_json(text: str, where: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(where, None, f"not valid JSON ({exc.msg})", "bad_json") from None
    except RecursionError:
        raise DataError(where, None, "JSON nested too deeply to read", "bad_json") from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, int | None, object]]:
    with path.open("rb") as fh:
        row = -1
        for line_no, raw in enumerate(fh, start=1):
            where = f"{path}, line {line_no}"
            line = _decode(raw.removeprefix(BOM) if line_no == 1 else raw, where)
            if not line.strip():
                continue
            row += 1
            yield row, line_no, _parse_json(line, where)


def _read_json(path: Path) -> Iterator[tuple[int, int | None, object]]:
    raw = path.read_bytes().removeprefix(BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}", None, "not UTF-8 text; save the file as UTF-8", "bad_encoding") from None
    data = _parse_json(text, str(path))
    if isinstance(data, dict):
        # {"data": [...]} or {"train": [...]}: accept a single list-valued key.
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(str(path), None, "expected a JSON list of records (or an object holding one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(str(path), None, "expected a JSON list of records")
    for row, record in enumerate(data):
        yield row, None, record


def _read_csv(path: Path) -> Iterator[tuple[int, int | None, object]]:
    csv.field_size_limit(2**31 - 1)  # the default (131,072 characters) refuses long responses
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        row, start = -1, 2
        try:
            for row, rec in enumerate(reader):
                if None in rec:
                    raise DataError(f"{path}, line {start}", None, f"{len(rec[None])} more fields than the header's "
                                    f"{len(reader.fieldnames)} columns", "bad_csv")
                yield row, start, {k: _csv_value(v) for k, v in rec.items()}
                start = reader.line_num + 1
        except csv.Error as exc:
            raise DataError(f"{path}, line {reader.line_num}", None, f"not valid CSV ({exc})", "bad_csv") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}, line {reader.line_num + 1}", None, "not UTF-8 text; save the file as UTF-8",
                            "bad_encoding") from None


def _csv_value(value: str | None) -> object:
    """CSV cells are strings; cells holding JSON lists/objects (messages, completions) are decoded."""
    if value is None:
        return None
    text = value.strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return value


def _read_parquet(path: Path) -> Iterator[tuple[int, int | None, object]]:
    import pyarrow.parquet as pq

    for row, record in enumerate(pq.read_table(path).to_pylist()):
        yield row, None, record


def _read_datasets(source: str, split: str) -> Iterator[tuple[int, int | None, object]]:
    import datasets

    path = Path(source)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(path))
    else:
        try:
            ds = datasets.load_dataset(source, split=split)
        except Exception as exc:  # many kinds: not found, offline, bad files; all are the user's to fix
            raise DataError(source, None, f"datasets.load_dataset could not read it: {exc}", "unreadable") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(source, None, f"has no split {split!r} (splits: {', '.join(ds)})")
        ds = ds[split]
    for row, record in enumerate(ds):
        yield row, None, record


_FILE_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def read_records(source: str, split: str = "train") -> Iterator[RawRecord]:
    """Yield every record of `source`: a .jsonl/.json/.csv/.parquet file, a `save_to_disk` folder, a folder
    or hub name for `datasets.load_dataset`. Each record carries its file and row for error messages."""
    path = Path(source)
    reader = _FILE_READERS.get(path.suffix.lower()) if path.is_file() else None
    if path.suffix.lower() in _FILE_READERS and not path.exists():
        raise DataError(source, None, "file does not exist", "missing_file")
    if path.is_file() and reader is None:
        raise DataError(source, None, f"unsupported file type {path.suffix!r}; use .jsonl, .json, .csv or .parquet", "unreadable")
    rows = reader(path) if reader else _read_datasets(source, split)
    for row, line, fields in rows:
        ref = RowRef(source, row, line)
        if not isinstance(fields, dict):
            raise DataError(ref, None, f"expected a record (an object), got {type(fields).__name__}", "not_a_record")
        yield RawRecord(ref, fields)
