"""Real daemons of the project started on loopback for unit tests."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc: subprocess.Popen, port: int, what: str, timeout: float = 10) -> None:
    """Until `proc` accepts connections on 127.0.0.1:`port`; fails with its output if
    it exits first, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None:
                out = proc.stdout or proc.stderr
                raise AssertionError(f"{what} exited: {out.read() if out else ''}") from None
            assert time.monotonic() < deadline, f"{what} never listened on {port}"
            time.sleep(0.05)
