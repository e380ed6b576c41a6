"""The PostgreSQL server the tests and the benchmark start: a port taken between the
moment it was chosen and the server's start is not a failed test run."""

from __future__ import annotations

import socket

import pytest

from benchmarks.pgserver import PostgresServer, find_bindir

pytestmark = pytest.mark.skipif(find_bindir() is None, reason="PostgreSQL is not installed")


def test_a_port_taken_before_the_server_binds_it_is_replaced() -> None:
    server = PostgresServer()
    taken = server.port
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with server:
            assert server.port != taken
            with socket.create_connection(("127.0.0.1", server.port), timeout=10):
                pass
