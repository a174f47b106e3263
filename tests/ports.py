"""Loopback ports for test and benchmark servers (stdlib only: every tier imports it)."""

import socket


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (a later bind may still lose a race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
