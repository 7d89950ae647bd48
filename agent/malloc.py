"""Keeps glibc's malloc from growing the agent's heap with buffers it frees at once (issue 17.2).

glibc serves a request of at least M_MMAP_THRESHOLD bytes (128 KiB at start) with its own
mmap(2), returned to the kernel by free(). But the threshold is dynamic: "when blocks larger
than the current threshold and less than or equal to DEFAULT_MMAP_THRESHOLD_MAX are freed, the
threshold is adjusted upwards to the size of the freed block", and the heap's trim threshold
to twice that (mallopt(3), M_MMAP_THRESHOLD; the GNU C Library manual, "Malloc Tunable
Parameters"). The agent frees such blocks for every document: asyncio's socket transport
reads into a 256 KiB bytes object and shrinks it to what arrived, and msgpack's packb starts
with a 256 KiB buffer (both seen with an LD_PRELOAD malloc logger on `bench drain`), and every
replication batch is about 0.5 MiB. After the first one they all came from the main heap,
the small objects allocated between them pinned the freed space, and the heap grew with every
document: 8 -> 11 MB over 45,000 documents through the API, and more in the drain.

"Dynamic adjustment of the mmap threshold is disabled if any of the M_TRIM_THRESHOLD,
M_TOP_PAD, M_MMAP_THRESHOLD, or M_MMAP_MAX parameters is set" (mallopt(3)), so setting the
threshold to its own initial value pins it: large buffers stay mmap'd, and free() gives them
back at once. The same as starting with MALLOC_MMAP_THRESHOLD_=131072 in the environment,
which the agent cannot rely on (systemd units, a technician's shell, benchmarks).

The price is in the drain: each batch's buffers (msgpack's, the payload, paho's packet) are
fresh mmaps, about 5 a batch and 550 page faults (perf stat on the agent, 30,000 entries:
20,538 faults pinned, 3,759 not), so the agent spends about 0.5-1 us more CPU an entry
(5.3-5.5 against 4.5-5.0 us). `bench drain --entries 200000`, four pairs alternated with
main's tree at load 2.5-5: 15,731-22,595 entries/s against 21,741-26,634 (agent CPU 6.3-7.1
against 5.3-5.8 us an entry); the sender waits for each batch's PUBACK, so the agent's time
per batch is on the drain's path. Not settled how much of that gap is this alone. A
threshold of 300,000 (the 256 KiB buffers on the heap, batches mmap'd) kept neither: the heap
grew again and the faults stayed. Trimming the heap every second (malloc_trim) instead held
the peak as well, for a thread or task more.

One arena for every thread (`limit_arenas`): glibc gives a thread that finds the main arena
busy an arena of its own, up to 8 per core (M_ARENA_MAX, mallopt(3), since glibc 2.10;
"NARENAS_FROM_NCORES", libc-alpha, "Document the M_ARENA_* mallopt parameters", 2016), each
keeping its own free memory. The agent's threads (aiosqlite's connections, asyncio.to_thread)
mostly wait on SQLite and the GIL, so they share one: about 1 MB less at the drain's peak
(harness, 30,000 documents then the drain, two runs each: 38 against 39 MB), no change in
fill or drain rate beyond the noise. mallopt(3) warns that one arena can mean contention
in programs whose threads allocate heavily; these do not.

A catalog snapshot is the exception (`heap_for_burst`): 100,000 items arrive as a few hundred
chunks in a few seconds, each a run of large buffers, and with the threshold pinned each was a
fresh mmap: a new lane's initial load took 5.24 / 5.58 s against 2.88 / 3.04 s unpinned
(`lanesync bench catalog --items 100000 --lanes 8 --json`, alternated, load 0.8-1.5), for the
same peak RSS (40.3-41.2 MB). During a snapshot the threshold is raised to glibc's maximum, so
those buffers reuse the heap, and afterwards set back and the heap trimmed (malloc_trim(3):
free memory at the top and, since glibc 2.8, whole free pages inside the heap are returned).

Not glibc (musl, macOS): nothing to do; the functions say False.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # glibc's initial (DEFAULT_MMAP_THRESHOLD_MIN)
BURST_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
_pinned: int | None = None  # the threshold pin_mmap_threshold set, if this libc took it
_bursts = 0  # heap_for_burst blocks running


def _mallopt(param: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter already uses
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(param, value) == 1)  # mallopt returns 1 on success
    if not ok:
        log.debug("mallopt(%d, %d) refused", param, value)
    return ok


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes; True if this libc took it."""
    global _pinned  # noqa: PLW0603 - the process's one malloc setting
    ok = _mallopt(M_MMAP_THRESHOLD, threshold)
    _pinned = threshold if ok else None
    return ok


@contextlib.contextmanager
def heap_for_burst() -> Iterator[None]:
    """While the block runs, large buffers come from the heap (a catalog snapshot's run of
    them is faster so); after the last such block the pin is back and the heap is trimmed.
    Nothing when the threshold was never pinned."""
    global _bursts  # noqa: PLW0603 - the process's one malloc setting
    if _pinned is None:
        yield
        return
    if _bursts == 0:
        _mallopt(M_MMAP_THRESHOLD, BURST_THRESHOLD)
    _bursts += 1
    try:
        yield
    finally:
        _bursts -= 1
        if _bursts == 0 and _pinned is not None:
            _mallopt(M_MMAP_THRESHOLD, _pinned)
            _malloc_trim()


def _malloc_trim() -> bool:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return bool(trim(0))


def limit_arenas(arenas: int = 1) -> bool:
    """At most `arenas` malloc arenas for the process's threads (before they start: a thread
    keeps the arena it was given); True if this libc took it."""
    return _mallopt(M_ARENA_MAX, arenas)
