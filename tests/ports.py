"""Free TCP ports on 127.0.0.1, for the servers and worker clusters that tests and benchmarks start."""

import socket


def free_local_ports(count: int) -> list:
    """`count` distinct TCP ports on 127.0.0.1 that were free a moment ago (all held open together, so that
    none is handed out twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
