"""protocol.exportfile: the signed two-line export file, written and read back."""

from __future__ import annotations

import json

import pytest

from protocol import exportfile
from protocol.chain import entry_hash, genesis
from protocol.identity import LaneId
from protocol.messages import Entry

LANE = LaneId("S001", "L01")
KEY = bytes(range(32))


def entries(n: int) -> list[Entry]:
    out, prev = [], genesis(LANE, 7)
    for seq in range(1, n + 1):
        body = f"doc {seq}".encode()
        h = entry_hash(prev, seq, "sale", f"t{seq}", 1000 + seq, body)
        out.append(Entry(seq, "sale", f"t{seq}", 1000 + seq, body, h))
        prev = h
    return out


def test_encode_decode_round_trip() -> None:
    es = entries(3)
    raw = exportfile.encode(LANE, 7, 0, genesis(LANE, 7), es, 1_700_000_000_000, KEY)
    line1, line2, end = raw.split(b"\n")
    assert end == b""
    assert json.loads(line1)["format"] == exportfile.FORMAT
    assert json.loads(line2) == {
        "alg": exportfile.ALG,
        "key_id": exportfile.key_id(KEY),
        "mac": exportfile.mac(KEY, line1),
    }
    f = exportfile.decode(raw, lambda lane: KEY)
    assert (f.lane, f.epoch, f.prev_hash, f.entries) == (LANE, 7, genesis(LANE, 7), es)


def test_payload_bytes_are_the_recorded_format() -> None:
    raw = exportfile.encode(LANE, 7, 0, b"\0" * 32, [], 5, KEY)
    assert raw.split(b"\n")[0] == (
        b'{"format":"lanesync-export/1","store":"S001","lane":"L01","epoch":7,"first_seq":null,'
        b'"last_seq":null,"acked_seq":0,"prev_hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",'
        b'"created_at":5,"entries":[]}'
    )


def test_altered_and_foreign_key_are_told_apart() -> None:
    raw = exportfile.encode(LANE, 7, 0, genesis(LANE, 7), entries(1), 5, KEY)
    altered = raw.replace(b'"epoch":7', b'"epoch":8')
    with pytest.raises(exportfile.SignatureMismatch, match="altered after it was written"):
        exportfile.decode(altered, lambda lane: KEY)
    with pytest.raises(exportfile.SignatureMismatch, match="signed with key"):
        exportfile.decode(raw, lambda lane: bytes(32))


def test_not_an_export() -> None:
    with pytest.raises(exportfile.ExportFileError, match="expected 2 lines"):
        exportfile.decode(b"{}", lambda lane: KEY)
    with pytest.raises(exportfile.ExportFileError, match="format is not"):
        exportfile.decode(b'{"format":"x"}\n{}\n', lambda lane: KEY)


def test_key_id_is_the_recorded_fingerprint() -> None:
    assert exportfile.key_id(KEY) == "a6ac1a0e5d337378"
    assert exportfile.key_id(KEY) != exportfile.key_id(bytes(32))
