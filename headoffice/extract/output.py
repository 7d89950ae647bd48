"""JSON Lines and CSV writers with one fixed byte format, so the same input gives the same bytes.

JSON: keys sorted, no spaces, UTF-8, one record per line, `\n` endings. CSV: fixed columns per
file, one row per line item (record fields repeated), `\n` endings, empty cell for null. Records
arrive already in a content-derived order; nothing here depends on time or on dict order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

from headoffice.extract import postings as _postings

PURCHASE_COLUMNS = (
    "record_id",
    "txn_id",
    "register_no",
    "kind",
    "store",
    "lane",
    "customer",
    "date",
    "currency",
    "erp_ref",
    "total",
    "line_no",
    "item",
    "qty",
    "unit_price",
    "tax_code",
    "amount",
    "tax",
)
ROLLUP_COLUMNS = (
    "document_no",
    "consolidated_no",
    "rolled_up",
    "type",
    "business_day",
    "store",
    "customer",
    "currency",
    "total",
    "sources",
    "line_no",
    "item",
    "unit_price",
    "tax_code",
    "qty",
    "amount",
    "tax",
)
ROLLUP_PAYMENT_COLUMNS = (
    "document_no",
    "tender",
    "scheme",
    "last4",
    "amount",
    "source",
)
POSTING_COLUMNS = _postings.COLUMNS


def dumps(record: Any) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if v is True or v is False:
        return "true" if v else "false"
    return str(v)


def jsonl(records: Iterable[Any]) -> bytes:
    return "".join(dumps(r) + "\n" for r in records).encode()


def csv_bytes(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue().encode()


def flatten(
    records: Iterable[dict[str, Any]], key: str, extra: Any = None
) -> Iterable[dict[str, Any]]:
    """One row per item of each record's `key` list, the record's other fields repeated (and
    `extra(record)` merged in): the CSV layout of nested records."""
    for r in records:
        head = {k: v for k, v in r.items() if k != key}
        if extra is not None:
            head.update(extra(r))
        for item in r[key]:
            yield {**head, **item}


def render(
    purchases: Sequence[dict[str, Any]],
    rollups: Sequence[dict[str, Any]],
    postings: Sequence[_postings.Posting],
    rejects: Sequence[dict[str, Any]],
    purchase_json: Sequence[str] | None = None,
) -> dict[str, bytes]:
    """Every output file of a run, name -> bytes, plus a manifest of counts and checksums.

    `purchase_json` is `dumps` of each purchase record when the caller already has it.
    """
    sources = lambda r: {"sources": " ".join(s["register_no"] for s in r["sources"])}  # noqa: E731
    if purchase_json is None:
        purchase_json = [purchase_dumps(p) for p in purchases]
    files = {
        "purchases.jsonl": "".join([t + "\n" for t in purchase_json]).encode(),
        "purchases.csv": purchases_csv(purchases),
        "rollup.jsonl": jsonl(rollups),
        "rollup.csv": csv_bytes(
            ROLLUP_COLUMNS, flatten([{**r, "payments": None} for r in rollups], "lines", sources)
        ),
        "rollup_payments.csv": csv_bytes(
            ROLLUP_PAYMENT_COLUMNS,
            ({"document_no": r["document_no"], **p} for r in rollups for p in r["payments"]),
        ),
        "postings.jsonl": postings_jsonl(postings),
        "postings.csv": postings_csv(postings),
        "rejects.jsonl": jsonl(rejects),
    }
    manifest = {
        "counts": {
            "purchases": len(purchases),
            "rollup": len(rollups),
            "postings": len(postings),
            "rejects": len(rejects),
        },
        "sha256": {n: hashlib.sha256(b).hexdigest() for n, b in sorted(files.items())},
    }
    files["manifest.json"] = (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode()
    return files


# Fast writers for the two big files. They give exactly the bytes of `dumps` and `csv_bytes`
# (tests/extract check both ways), by formatting each record type with its keys pre-sorted
# and its values encoded the way json encodes them. Values whose type is not the expected one
# go through `dumps`, so odd input is never rendered differently, only more slowly.


def _js(v: Any) -> str:
    """A JSON value exactly as `dumps` writes it."""
    if type(v) is str:
        return encode_basestring(v)
    if type(v) is int:
        return int.__repr__(v)
    if v is None:
        return "null"
    return dumps(v)


def _template(keys: Sequence[str]) -> str:
    return "{" + ",".join(f"{encode_basestring(k)}:%s" for k in sorted(keys)) + "}\n"


_INT_COLUMNS = frozenset({"amount", "outstanding", "tax", "line_no"})
_NULL_COLUMNS = frozenset({"invoice_no", "invoice_date"})


def _row_writer(keys: Sequence[str]) -> Callable[[_postings.Posting], str]:
    """A formatter for one posting row type, generated from its sorted keys.

    Posting rows hold str in every column but these: int in `_INT_COLUMNS`, str or None in
    `_NULL_COLUMNS`. `encode_basestring` and `int.__repr__` raise TypeError on anything else,
    so a broken row can fail the run but never be written differently from `dumps`.
    """
    parts = []
    for k in sorted(keys):
        c = _postings.COLUMNS.index(k)
        if k in _INT_COLUMNS:
            parts.append(f"irepr(r[{c}])")
        elif k in _NULL_COLUMNS:
            parts.append(f"js(r[{c}])")
        else:
            parts.append(f"enc(r[{c}])")
    code = f"lambda r: template % ({', '.join(parts)},)"
    env = {"template": _template(keys), "js": _js, "enc": encode_basestring, "irepr": int.__repr__}
    fn: Callable[[_postings.Posting], str] = eval(code, env)  # noqa: S307 - generated above
    return fn


_POSTING_WRITERS = {name: _row_writer(keys) for name, keys in _postings.KEYS.items()}


def postings_jsonl(rows: Iterable[_postings.Posting]) -> bytes:
    line = _POSTING_WRITERS["line"]
    batch_line = _POSTING_WRITERS["batch_line"]
    ar = _POSTING_WRITERS["ar"]
    receipt = _POSTING_WRITERS["receipt"]
    out = []
    for r in rows:
        t = r.type
        if t == "line":
            out.append(line(r) if r.batch is None else batch_line(r))
        elif t in {"invoice", "credit"}:
            out.append(ar(r))
        else:
            out.append(receipt(r))
    return "".join(out).encode()


def postings_csv(rows: Iterable[_postings.Posting]) -> bytes:
    """`csv_bytes(POSTING_COLUMNS, ...)`: posting rows hold only str, int and None (see
    `_row_writer`), which the csv module writes as `_cell` does (None as an empty cell)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(POSTING_COLUMNS)
    w.writerows(rows)
    return buf.getvalue().encode()


_PURCHASE_KEYS = sorted(
    (
        "customer",
        "currency",
        "date",
        "erp_ref",
        "kind",
        "lane",
        "lines",
        "record_id",
        "register_no",
        "store",
        "tax",
        "total",
        "txn_id",
    )
)
_PURCHASE_LINE_KEYS = sorted(("line_no", "item", "qty", "unit_price", "tax_code", "amount", "tax"))
_PURCHASE_HEAD = "{" + ",".join(f"{encode_basestring(k)}:%s" for k in _PURCHASE_KEYS) + "}"
_PURCHASE_LINE = "{" + ",".join(f"{encode_basestring(k)}:%s" for k in _PURCHASE_LINE_KEYS) + "}"


def purchase_dumps(rec: dict[str, Any]) -> str:
    """`dumps(rec)` for a purchase record (from purchases.purchase)."""
    if len(rec) != len(_PURCHASE_KEYS) or type(rec.get("lines")) is not list:
        return dumps(rec)
    lines = []
    for ln in rec["lines"]:
        if len(ln) != len(_PURCHASE_LINE_KEYS):
            return dumps(rec)
        lines.append(_PURCHASE_LINE % tuple([_js(ln[k]) for k in _PURCHASE_LINE_KEYS]))
    vals = ["[" + ",".join(lines) + "]" if k == "lines" else _js(rec[k]) for k in _PURCHASE_KEYS]
    return _PURCHASE_HEAD % tuple(vals)


def purchases_csv(records: Iterable[dict[str, Any]]) -> bytes:
    """`csv_bytes(PURCHASE_COLUMNS, flatten(records, "lines"))` without a dict per line."""
    head_cols = [c for c in PURCHASE_COLUMNS if c not in _PURCHASE_LINE_KEYS]
    line_cols = [c for c in PURCHASE_COLUMNS if c in _PURCHASE_LINE_KEYS]
    if (*head_cols, *line_cols) != PURCHASE_COLUMNS:  # pragma: no cover - layout guard
        return csv_bytes(PURCHASE_COLUMNS, flatten(records, "lines"))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PURCHASE_COLUMNS)
    out: list[list[Any]] = []
    for r in records:
        if not all(c in r for c in head_cols):
            out.extend([_cell(x.get(c)) for c in PURCHASE_COLUMNS] for x in flatten([r], "lines"))
            continue
        head = [r[c] for c in head_cols]
        for ln in r["lines"]:
            if len(ln) != len(line_cols):
                out.append([_cell({**r, **ln}.get(c)) for c in PURCHASE_COLUMNS])
                continue
            row = head + [ln.get(c, r.get(c)) for c in line_cols]
            out.append(row)  # str, int and None only (purchases.purchase): as `_cell` writes
    w.writerows(out)
    return buf.getvalue().encode()


def write_dir(path: Path, files: dict[str, bytes]) -> None:
    """Write every file and fsync it and the directory, so a commit never outruns the bytes."""
    path.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(files.items()):
        with open(path / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    fsync_dir(path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
