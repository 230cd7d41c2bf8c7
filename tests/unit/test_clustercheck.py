"""The Galera clustercheck daemon, run for real on a loopback port with no mysqld."""

import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from daemons import free_port, wait_listening

SCRIPT = Path(__file__).parents[2] / "roles/galera/files/galera-clustercheck"


@pytest.fixture
def clustercheck(tmp_path):
    defaults = tmp_path / "my.cnf"
    defaults.write_text(f"[client]\nsocket = {tmp_path}/none.sock\nuser = check\n"
                        "password = x\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--bind", "127.0.0.1",
                             "--port", str(port), "--defaults-file", str(defaults)],
                            stderr=subprocess.PIPE, text=True)
    wait_listening(proc, port, "clustercheck")
    yield port, proc
    proc.kill()
    proc.wait()


def _check(port: int, reset: bool) -> bytes:
    """One HAProxy-style check; with `reset`, close with RST after the status line."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"OPTIONS / HTTP/1.0\r\n\r\n")
    first = s.recv(12)
    if reset:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    return first


def test_unsynced_node_answers_503_and_resets_log_nothing(clustercheck):
    port, proc = clustercheck
    for _ in range(20):
        assert _check(port, reset=True) == b"HTTP/1.0 503"
    assert _check(port, reset=False) == b"HTTP/1.0 503"
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err
