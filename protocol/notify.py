"""systemd's sd_notify protocol (READY=1, WATCHDOG=1, STATUS=...), dependency-free.

Writes one datagram to $NOTIFY_SOCKET when systemd (or a test) provides one and does nothing
otherwise. This is the one piece of I/O in protocol/: both daemons need it and it is 20 lines
of stdlib (sd_notify(3): the socket may be abstract, written with a leading '@').
"""

from __future__ import annotations

import os
import socket


def notify(*lines: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(addr)
        s.sendall("\n".join(lines).encode())
    return True
