"""Is something listening? Small TCP probes for the dev stack."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout_s: float, every_s: float = 0.05) -> bool:
    """Poll ``check`` until it is true or ``timeout_s`` passes; return its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every_s)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for tests and throwaway brokers)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
