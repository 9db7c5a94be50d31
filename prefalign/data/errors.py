"""Data errors that name the file, row and field, and the tally of rows skipped under `on_bad_row: skip`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RowRef:
    """Where an example came from: a file (or dataset name), its 0-based row index, and for line-based files
    (JSONL, CSV) the 1-based line an editor shows. Messages count from 1 either way."""

    source: str
    row: int
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.source}, line {self.line}" if self.line is not None else f"{self.source}, record {self.row + 1}"


class DataError(ValueError):
    """Bad input, located: `train.jsonl, line 18, field 'chosen': response is empty`."""

    def __init__(self, where: RowRef | str, field_name: str | None, reason: str, kind: str = "invalid") -> None:
        self.where = where
        self.field_name = field_name
        self.reason = reason
        self.kind = kind
        located = str(where) + (f", field {field_name!r}" if field_name else "")
        super().__init__(f"{located}: {reason}")


@dataclass
class BadRowTally:
    """Rows skipped, by kind of problem, with the first example of each kind for the summary."""

    counts: Counter = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)
    total_rows: int = 0

    def add(self, error: DataError) -> None:
        self.counts[error.kind] += 1
        self.first.setdefault(error.kind, str(error))

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def summary_lines(self) -> list[str]:
        if not self.skipped:
            return [f"{self.total_rows} rows read, none skipped"]
        lines = [f"{self.total_rows} rows read, {self.skipped} skipped:"]
        for kind, n in self.counts.most_common():
            lines.append(f"  {n:6d}  {kind:<18} e.g. {self.first[kind]}")
        return lines
