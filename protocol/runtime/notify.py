"""systemd's sd_notify protocol (READY=1, WATCHDOG=1, STATUS=...), dependency-free.

Writes one datagram to $NOTIFY_SOCKET when systemd (or a test) provides one and does nothing
otherwise. This is the one piece of I/O in protocol/: both daemons need it and it is a few lines
of stdlib (sd_notify(3): the socket may be abstract, written with a leading '@').

The send never blocks. libsystemd's sd_notify sends on a blocking socket, and a Unix datagram
send blocks once the receiver holds net.unix.max_dgram_qlen datagrams (10 by default): PID 1
does not read its notify socket during a long daemon-reload (systemd/systemd#3808), and a
blocking send there would freeze our whole event loop, tills and watchdog with it. So `notify`
reports a full queue instead of waiting; `notify_soon` retries for the messages that must arrive
(READY=1, STOPPING=1), while a missed WATCHDOG=1 is simply sent again at the next interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)

RETRY_EVERY_S = 0.05


class NotifyBusy(Exception):
    """The service manager's notify queue is full: nothing was sent, try again later."""


def _send(payload: bytes) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path
    flags = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
    with socket.socket(socket.AF_UNIX, flags) as s:
        try:
            s.connect(addr)
            s.send(payload)
        except BlockingIOError:  # EAGAIN: the receiver's queue is full
            raise NotifyBusy from None
        except OSError as exc:
            # A vanished or refusing socket must not stop a daemon that is otherwise healthy.
            log.warning("sd_notify: cannot write to NOTIFY_SOCKET %s: %s", path, exc)
            return False
    return True


def notify(*lines: str) -> bool:
    """Sends `lines` as one datagram without blocking. False when there is no notify socket,
    it cannot be reached, or its queue is full (then the message is dropped, with a warning)."""
    try:
        return _send("\n".join(lines).encode())
    except NotifyBusy:
        log.warning("sd_notify: the service manager's queue is full; dropped %s", lines[0])
        return False


async def notify_soon(*lines: str, within_s: float = 10.0) -> bool:
    """Like `notify`, but retries a full queue every 50 ms for up to `within_s` seconds without
    blocking the event loop: for state changes systemd must see (READY=1, STOPPING=1)."""
    payload = "\n".join(lines).encode()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            return _send(payload)
        except NotifyBusy:
            if loop.time() >= deadline:
                log.warning(
                    "sd_notify: the service manager's queue stayed full for %.0f s; dropped %s",
                    within_s,
                    lines[0],
                )
                return False
        await asyncio.sleep(RETRY_EVERY_S)
