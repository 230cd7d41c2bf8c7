"""The Galera clustercheck daemon, run for real on a loopback port with no mysqld."""

import importlib.machinery
import importlib.util
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


def _load():
    loader = importlib.machinery.SourceFileLoader("galera_clustercheck", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize(("argv", "ist"), [
    ([b"/bin/bash", b"-ue", b"/usr//bin/wsrep_sst_rsync", b"--role", b"donor", b"--bypass"], True),
    ([b"/bin/bash", b"-ue", b"/usr//bin/wsrep_sst_rsync", b"--role", b"donor"], False),
    ([b"/usr/bin/something", b"--bypass"], False),
])
def test_a_donor_counts_as_synced_only_while_it_serves_an_ist(tmp_path, argv, ist):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "cmdline").write_bytes(b"/usr/sbin/mariadbd\0")
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
    assert _load().serving_ist(tmp_path) is ist
