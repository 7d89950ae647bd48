"""protocol.proof: the verdict's words, reading a range back, and the seqs a lane sends to
narrow it (issue 16.7)."""

from __future__ import annotations

import itertools

import pytest

from protocol import proof
from protocol.errors import ProtocolError

H = [bytes([i]) * 32 for i in range(256)]


def test_compare_finds_where_the_chains_agree_and_differ() -> None:
    ours = {s: H[s] for s in range(101)}
    lane = {s: (H[s] if s <= 40 else H[255]) for s in range(101)}
    pts = [(s, lane[s]) for s in (100, 99, 68, 36, 0)]
    v = proof.compare(pts, ours, 100)
    assert (v.text, v.state, v.upto, v.differ, v.exact) == (
        "identical up to seq 36; first difference between seq 37 and 68",
        "differ",
        36,
        68,
        False,
    )
    assert proof.range_of(v.text) == (36, 68)
    v = proof.compare([(s, lane[s]) for s in proof.narrow_seqs(36, 68)], ours)
    assert (v.text, v.exact) == ("identical up to seq 40; differ at seq 41", True)
    assert proof.range_of(v.text) is None
    assert proof.compare([(100, H[100])], ours, 100).text == "identical up to seq 100"
    v = proof.compare([(5, H[5])], ours)
    assert (v.state, v.differ) == ("identical", None)
    assert proof.range_of("identical up to seq 7") is None
    assert proof.range_of(None) is None
    assert proof.range_of("identical up to seq 7; first difference between seq 9 and 12") is None


@pytest.mark.parametrize(("good", "bad"), [(0, 1), (0, 2), (10, 74), (10, 75), (0, 10**9)])
def test_narrow_seqs_is_bounded_ordered_and_keeps_both_ends(good: int, bad: int) -> None:
    seqs = proof.narrow_seqs(good, bad)
    assert seqs[0] == good
    assert seqs[-1] == bad
    assert seqs == sorted(set(seqs))
    assert len(seqs) <= proof.MAX_NARROW_HASHES
    if bad - good + 1 <= proof.MAX_NARROW_HASHES:
        assert seqs == list(range(good, bad + 1))
    else:
        gaps = [b - a for a, b in itertools.pairwise(seqs)]
        assert max(gaps) - min(gaps) <= 1  # evenly spaced: each round divides the range


def test_narrow_args_are_checked() -> None:
    assert proof.narrow_args({"epoch": 3, "hashes": [[0, H[0]]]}) == (3, ((0, H[0]),))
    for args, field in (
        ({"epoch": 0, "hashes": [[0, H[0]]]}, "epoch"),
        ({"epoch": True, "hashes": [[0, H[0]]]}, "epoch"),
        ({"epoch": 1}, "hashes"),
        ({"epoch": 1, "hashes": [[0, H[0]]] * 65}, "hashes"),
        ({"epoch": 1, "hashes": [[-1, H[0]]]}, "hashes[0]"),
        ({"epoch": 1, "hashes": [[0, H[0], 1]]}, "hashes[0]"),
    ):
        with pytest.raises(ProtocolError) as exc:
            proof.narrow_args(args)
        assert exc.value.field == field
