"""Issue 17.2, the agent's own share: its txn ids without uuid6, glibc's mmap threshold pinned,
and what `lanesync agent` does not import (tests/ops/test_lean_agent.py runs a real one)."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import uuid6

from agent.journal.journal import new_txn_id


def test_txn_ids_are_uuid7_in_the_order_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_txn_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # a millisecond used twice is bumped, as uuid6 does
    for text in ids[:50]:
        u = uuid.UUID(text)
        assert str(u) == text
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
    first_ms = uuid.UUID(ids[0]).int >> 80
    assert before <= first_ms <= before + 1000
    # the same layout as uuid6's own, which the lane used before: they sort together by time
    theirs = str(uuid6.uuid7())
    assert uuid.UUID(theirs).version == 7
    assert abs((uuid.UUID(theirs).int >> 80) - first_ms) < 60_000


def _glibc_mallinfo2() -> bool:
    try:
        ctypes.CDLL(None).mallinfo2  # noqa: B018 - glibc 2.33 and later
    except (OSError, AttributeError):
        return False
    return True


# A fresh interpreter's start for the malloc tests: glibc's mallinfo2() and agent.malloc.
_MALLINFO2 = textwrap.dedent(
    """
    import ctypes
    from agent import malloc

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    """
)


def _mallinfo2_run(script: str) -> str:
    """What `script` (dedented, after _MALLINFO2) prints in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _MALLINFO2 + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


@pytest.mark.skipif(not _glibc_mallinfo2(), reason="glibc's mallopt and mallinfo2 only")
@pytest.mark.parametrize("pinned", [False, True])
def test_a_pinned_mmap_threshold_keeps_large_buffers_out_of_the_heap(pinned: bool) -> None:
    """Unpinned, freeing a 1 MiB mmap'd block raises glibc's threshold to 1 MiB, so a 300 KB
    buffer then comes from the heap; pinned (agent.malloc), it is mmap'd, and freed at once."""
    printed = _mallinfo2_run(
        f"""
        if {pinned}:
            assert malloc.pin_mmap_threshold()
        big = bytearray(1 << 20)
        del big  # an mmap'd block freed: unpinned, the threshold rises to its size
        before = libc.mallinfo2().hblks
        buf = bytearray(300_000)
        print(libc.mallinfo2().hblks - before)
        """
    )
    assert int(printed) == (1 if pinned else 0)


@pytest.mark.skipif(not _glibc_mallinfo2(), reason="glibc's mallopt and mallinfo2 only")
def test_a_burst_takes_large_buffers_from_the_heap_and_the_pin_comes_back() -> None:
    """During agent.malloc.heap_for_burst (a catalog snapshot) a 300 KB buffer comes from the
    heap; nested blocks keep it so until the outer one ends; then the pin holds again."""
    printed = _mallinfo2_run(
        """
        def mmapped_300k():
            before = libc.mallinfo2().hblks
            buf = bytearray(300_000)
            return libc.mallinfo2().hblks - before

        with malloc.heap_for_burst():  # never pinned: nothing changes
            pass
        assert malloc.pin_mmap_threshold()
        seen = [mmapped_300k()]
        with malloc.heap_for_burst():
            seen.append(mmapped_300k())
            with malloc.heap_for_burst():
                seen.append(mmapped_300k())
            seen.append(mmapped_300k())
        seen.append(mmapped_300k())
        print(seen)
        """
    )
    assert printed == "[1, 0, 0, 0, 1]"


@pytest.mark.skipif(not _glibc_mallinfo2(), reason="glibc's mallopt and malloc_info only")
@pytest.mark.parametrize("limited", [False, True])
def test_limited_arenas_put_every_threads_memory_in_the_main_arena(
    limited: bool, tmp_path: Path
) -> None:
    """glibc gives a thread that finds the main arena locked one of its own; limited to one
    (agent.malloc.limit_arenas), there is only ever the main arena."""
    report = tmp_path / "malloc.xml"
    script = textwrap.dedent(
        f"""
        import ctypes, threading
        from agent import malloc

        if {limited}:
            assert malloc.limit_arenas(1)
        libc = ctypes.CDLL(None)
        libc.fopen.restype = ctypes.c_void_p
        held, go = [], threading.Barrier(5)

        def work():
            go.wait()
            for _ in range(20_000):
                held.append(bytearray(600))  # past pymalloc's 512 bytes: malloc itself

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        go.wait()
        for _ in range(20_000):
            held.append(bytearray(600))
        for t in threads:
            t.join()
        f = libc.fopen({str(report)!r}.encode(), b"w")
        libc.malloc_info(0, ctypes.c_void_p(f))
        libc.fclose(ctypes.c_void_p(f))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    heaps = report.read_text().count("<heap nr=")
    if limited:
        assert heaps == 1
    else:
        assert heaps > 1  # the threads that found the main arena busy got their own
