"""tests/support/ports.py: a port for a server the tests restart lies below the kernel's ephemeral range
(which outgoing connections take local ports from) and is free to bind, with its neighbour if asked."""
from __future__ import annotations

import socket

from tests.support import ports


def test_a_restartable_port_is_below_the_ephemeral_range_and_free():
    low = ports._ephemeral_low()
    for pair in (False, True):
        port = ports.restartable_port(pair=pair)
        assert 1024 <= port < low - 1
        for taken in ([port, port + 1] if pair else [port]):
            with socket.socket() as server:
                server.bind(("127.0.0.1", taken))
