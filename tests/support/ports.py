"""Ports for servers that tests stop and start again on the same port (Redis, PostgreSQL, OpenBao).

A port from bind(("127.0.0.1", 0)) lies in the kernel's ephemeral range (ip_local_port_range, 32768-60999
here), the range every outgoing connection on the machine takes its local port from. While such a server
is stopped, any connection made meanwhile (the suite makes hundreds a second) may take its port, and the
server cannot bind it again (EADDRINUSE). Below that range only bind() hands ports out.
"""
from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def restartable_port(pair: bool = False) -> int:
    """A free port below the ephemeral range (and the next one free too if `pair`: OpenBao's cluster
    listener binds port + 1), picked at random so parallel test processes rarely try the same one."""
    high = _ephemeral_low() - 2
    low = 10000 if high > 20000 else 1024
    pick = random.SystemRandom()
    for _ in range(200):
        port = pick.randint(low, high)
        if _free(port) and (not pair or _free(port + 1)):
            return port
    raise RuntimeError(f"no free port between {low} and {high}")
