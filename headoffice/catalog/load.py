"""Loading a dataset file (CSV or JSON Lines) into the catalog: checked whole, then one version.

The whole file is parsed and every row checked before anything is written: one bad row
refuses the load with a LoadError naming the file, the row (the 1-based data row of a CSV,
the line of a JSON Lines file) and the column, and the catalog is unchanged. Then the rows
are diffed against the dataset's current rows and committed as one version holding only the
delta (headoffice.catalog.versions). The CLI and the HTTP endpoint both come through here.
"""

from __future__ import annotations

import csv
import io
import json
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from headoffice.catalog import versions
from headoffice.catalog.versions import LoadResult
from headoffice.db.sql import Sql
from protocol import catalog as cat
from protocol.errors import LanesyncError, ProtocolError
from protocol.pan import mask_text
from protocol.runtime import clock

Format = Literal["csv", "jsonl"]
MAX_FILE_BYTES = 512 * 1024 * 1024  # a catalog file bigger than this is refused before parsing
MAX_LINE_BYTES = 1024 * 1024
CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")
CONTENT_TYPES: dict[str, Format] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/jsonlines": "jsonl",
}


class LoadError(LanesyncError):
    """A file refused whole: where (file, row, column) and why; nothing was changed."""

    code = "catalog_load"

    def __init__(self, file: str, row: int | None, column: str | None, reason: str) -> None:
        self.file = mask_text(file)
        self.row = row
        self.column = None if column is None else mask_text(column)
        self.reason = mask_text(reason)
        where = self.file
        if row is not None:
            where += f": row {row}"
        if self.column is not None:
            where += f", column {self.column}"
        super().__init__(f"{where}: {self.reason}; nothing was loaded")

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "row": self.row, "column": self.column, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Parsed:
    """The rows of a file, every one checked, keys unique."""

    dataset: cat.Dataset
    rows: list[cat.Row]
    file: str
    numbers: list[int]  # each row's data row (CSV) or line (JSON Lines), for errors


def format_of(name: str) -> Format:
    lower = name.lower()
    if lower.endswith(CSV_SUFFIXES):
        return "csv"
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    raise LoadError(name, None, None, "name a .csv or .jsonl (JSON Lines) file")


def format_of_content_type(value: str | None) -> Format:
    media = (value or "").split(";", 1)[0].strip().lower()
    found = CONTENT_TYPES.get(media)
    if found is None:
        raise LoadError(
            "request body",
            None,
            None,
            f"Content-Type {mask_text(media[:60])!r} is not one of {', '.join(CONTENT_TYPES)}",
        )
    return found


def parse(data: bytes, fmt: Format, dataset: str, file: str) -> Parsed:
    """Every row of `data` checked (and the zones and cross-row rules); LoadError on the first
    that is not right."""
    try:
        ds = cat.dataset(dataset)
    except ProtocolError as exc:
        raise LoadError(file, None, "dataset", exc.reason) from None
    if len(data) > MAX_FILE_BYTES:
        raise LoadError(file, None, None, f"{len(data)} bytes exceed {MAX_FILE_BYTES}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LoadError(file, None, None, f"not UTF-8 (byte {exc.start}, line {line})") from None
    rows = _csv_rows(ds, text, file) if fmt == "csv" else _jsonl_rows(ds, text, file)
    seen: dict[str, int] = {}
    out: list[cat.Row] = []
    numbers: list[int] = []
    for n, row in rows:
        key = ds.key_of(row)
        if key in seen:
            raise LoadError(
                file, n, ",".join(ds.key), f"the same key as row {seen[key]} ({mask_text(key)})"
            )
        seen[key] = n
        _check_zones(ds, row, file, n)
        out.append(row)
        numbers.append(n)
    return Parsed(ds, out, file, numbers)


def _csv_rows(ds: cat.Dataset, text: str, file: str) -> Iterator[tuple[int, cat.Row]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise LoadError(file, None, None, "empty file: a CSV starts with a header row")
        header = [h.strip() for h in header]
        try:
            cat.check_header(ds, header)
        except ProtocolError as exc:
            raise LoadError(file, None, exc.field, f"header: {exc.reason}") from None
        for n, cells in enumerate(reader, start=1):
            if not cells or cells == [""]:
                continue
            if len(cells) != len(header):
                raise LoadError(
                    file, n, None, f"{len(cells)} cells for the header's {len(header)} columns"
                )
            try:
                yield n, cat.parse_cells(ds, dict(zip(header, cells, strict=True)))
            except ProtocolError as exc:
                raise LoadError(file, n, exc.field, exc.reason) from None
    except csv.Error as exc:
        raise LoadError(file, reader.line_num, None, f"not CSV: {exc}") from None


def _jsonl_rows(ds: cat.Dataset, text: str, file: str) -> Iterator[tuple[int, cat.Row]]:
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:
            raise LoadError(file, n, None, f"line longer than {MAX_LINE_BYTES} characters")
        try:
            value = json.loads(line, parse_constant=_no_constant)
        except ValueError as exc:
            raise LoadError(file, n, None, f"not JSON: {mask_text(str(exc))}") from None
        if type(value) is not dict:
            raise LoadError(file, n, None, f"must be a JSON object, got {type(value).__name__}")
        try:
            yield n, cat.check_row(ds, value)
        except ProtocolError as exc:
            raise LoadError(file, n, exc.field, exc.reason) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _check_zones(ds: cat.Dataset, row: cat.Row, file: str, n: int) -> None:
    """Time zones must exist in this machine's tz database, not only look like one."""
    zone, column = None, None
    if ds.name == "stores":
        zone, column = row["timezone"], "timezone"
    elif ds.name == "settings" and row["name"] == "Timezone":
        zone, column = row["value"], "value"
    if zone is None:
        return
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise LoadError(file, n, column, f"{zone} is not a known IANA time zone") from None


def _references(parsed: Parsed, upsert: bool) -> Callable[[Sql], None] | None:
    """The check across datasets a load needs, run under the catalog's lock against the
    current rows: a ReturnTxnType setting names a txn_types code, and a txn_types load keeps
    every code a ReturnTxnType setting names."""
    if parsed.dataset.name == "settings":
        named = [
            (n, row["value"])
            for n, row in zip(parsed.numbers, parsed.rows, strict=True)
            if row["name"] == "ReturnTxnType"
        ]
        if not named:
            return None

        def check_settings(sql: Sql) -> None:
            known = {r["code"] for r in versions.current_rows(sql, "txn_types")}
            for n, code in named:
                if code not in known:
                    listed = ", ".join(sorted(known)[:10]) or "none loaded yet"
                    raise LoadError(
                        parsed.file,
                        n,
                        "value",
                        f"ReturnTxnType {code} is not a txn_types code ({listed})",
                    )

        return check_settings
    if parsed.dataset.name == "txn_types":
        codes = {row["code"] for row in parsed.rows}

        def check_types(sql: Sql) -> None:
            kept = codes | (
                {r["code"] for r in versions.current_rows(sql, "txn_types")} if upsert else set()
            )
            for row in versions.current_rows(sql, "settings"):
                if row["name"] == "ReturnTxnType" and row["value"] not in kept:
                    where = row["scope"] + "".join(
                        f" {row[k]}" for k in ("store", "lane") if k in row
                    )
                    raise LoadError(
                        parsed.file,
                        None,
                        "code",
                        f"txn_types code {row['value']} is the "
                        f"ReturnTxnType setting of {where}: change that setting first",
                    )

        return check_types
    return None


def load_parsed(sql: Sql, parsed: Parsed, *, upsert: bool, source: str | None = None) -> LoadResult:
    return versions.commit_load(
        sql,
        parsed.dataset,
        parsed.rows,
        upsert=upsert,
        source=source or parsed.file,
        now_ms=clock.now_ms(),
        check=_references(parsed, upsert),
    )


def load_file(sql: Sql, dataset: str, path: Path, *, upsert: bool = False) -> LoadResult:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError(str(path), None, None, f"cannot read: {exc.strerror}") from None
    parsed = parse(data, format_of(path.name), dataset, str(path))
    return load_parsed(sql, parsed, upsert=upsert, source=str(path.resolve()))
