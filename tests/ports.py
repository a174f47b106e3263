"""Loopback ports for test and benchmark servers (stdlib only: every tier imports it)."""

import socket


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (a later bind may still lose a race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """count different free loopback ports: all held open together while they are chosen."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
