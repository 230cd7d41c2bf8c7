"""The lab power switch without a lab: only signed, fresh, unreplayed
requests from the lab network, for on/off/status/list of lab nodes."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import pytest

from halab.errors import HalabError
from halab.lab import fenced

KEY = "k" * 64
LAB_PEER = "198.51.100.10"  # overcloud-controller-0's internal address
PEER_KEY = fenced.node_key(KEY, "overcloud-controller-0")


def signed(**req) -> tuple[bytes, str]:
    body = json.dumps({"ts": time.time(), "nonce": req.pop("nonce", "n1"), **req}).encode()
    return body, fenced.sign(PEER_KEY, body)


@pytest.fixture
def switch() -> fenced.Switch:
    return fenced.Switch(KEY)


def test_a_signed_request_passes(switch):
    body, sig = signed(action="status", node="overcloud-controller-1")
    assert switch.check(body, sig, LAB_PEER)["node"] == "overcloud-controller-1"


def test_a_wrong_key_is_refused(switch):
    body, _ = signed(action="off", node="overcloud-controller-1")
    with pytest.raises(PermissionError, match="bad signature"):
        switch.check(body, fenced.sign("other-key", body), LAB_PEER)


def test_a_tampered_body_is_refused(switch):
    body, sig = signed(action="status", node="overcloud-controller-1")
    with pytest.raises(PermissionError, match="bad signature"):
        switch.check(body.replace(b"status", b"off"), sig, LAB_PEER)


def test_a_replayed_request_is_refused(switch):
    body, sig = signed(action="off", node="overcloud-controller-1", nonce="same")
    switch.check(body, sig, LAB_PEER)
    with pytest.raises(PermissionError, match="replayed"):
        switch.check(body, sig, LAB_PEER)


def test_a_stale_request_is_refused(switch):
    body = json.dumps({"action": "off", "node": "overcloud-controller-1", "nonce": "x",
                       "ts": time.time() - 3600}).encode()
    with pytest.raises(PermissionError, match="stale"):
        switch.check(body, fenced.sign(PEER_KEY, body), LAB_PEER)


def test_a_node_cannot_sign_as_another_node(switch):
    """Controller-1 takes controller-0's address: its own key does not sign for it,
    and neither key is the switch's."""
    body = json.dumps({"action": "off", "node": "overcloud-controller-2", "nonce": "y",
                       "ts": time.time()}).encode()
    own = fenced.node_key(KEY, "overcloud-controller-1")
    with pytest.raises(PermissionError, match="bad signature"):
        switch.check(body, fenced.sign(own, body), LAB_PEER)
    assert len({KEY, own, PEER_KEY}) == 3


@pytest.mark.parametrize("key", ["", "x" * 31])
def test_a_short_key_is_refused(key):
    with pytest.raises(fenced.HalabError, match="at least 32"):
        fenced.Switch(key)


def test_an_empty_key_file_is_refused_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("HALAB_STATE_DIR", str(tmp_path))
    fenced.key_path().parent.mkdir(parents=True)
    fenced.key_path().write_text("\n")
    with pytest.raises(fenced.HalabError, match="0 characters"):
        fenced.ensure_key()


def test_each_node_gets_its_own_key_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HALAB_STATE_DIR", str(tmp_path))
    key = fenced.ensure_key()
    files = sorted((tmp_path / "secrets" / "fence_halab").iterdir())
    assert [f.name for f in files] == [f"overcloud-controller-{i}.key" for i in range(3)]
    assert {f.read_text().strip() for f in files} == {
        fenced.node_key(key, f"overcloud-controller-{i}") for i in range(3)}
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)


def test_a_request_that_is_not_an_object_is_refused(switch):
    body = b"[1, 2]"
    with pytest.raises(ValueError, match="JSON object"):
        switch.check(body, fenced.sign(PEER_KEY, body), LAB_PEER)


def test_requests_from_outside_the_lab_network_are_refused(switch):
    body, sig = signed(action="status", node="overcloud-controller-1")
    with pytest.raises(PermissionError, match="outside the lab network"):
        switch.check(body, sig, "198.51.100.74")  # the external network


def test_only_power_actions(switch):
    body, sig = signed(action="exec", node="overcloud-controller-1")
    with pytest.raises(ValueError, match="unknown action"):
        switch.check(body, sig, LAB_PEER)


def test_only_lab_nodes(switch):
    body, sig = signed(action="off", node="the-host")
    with pytest.raises(fenced.HalabError, match="unknown node"):
        switch.check(body, sig, LAB_PEER)


@contextlib.contextmanager
def serving(state_dir, clients: str):
    """The real daemon (`halab fenced serve`) on loopback, answering `clients`; its port."""
    import subprocess
    import sys

    from daemons import free_port, wait_listening

    free = free_port()
    env = {**os.environ, "HALAB_STATE_DIR": str(state_dir), "HALAB_FENCED_ADDRESS": "127.0.0.1",
           "HALAB_FENCED_PORT": str(free), "HALAB_FENCED_CLIENTS": clients}
    proc = subprocess.Popen([sys.executable, "-m", "halab", "fenced", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_listening(proc, free, "the switch")
        yield free
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def daemon(tmp_path):
    """The switch serving loopback; its port and key file."""
    with serving(tmp_path, "127.0.0.0/8") as port:
        yield port, tmp_path / "secrets" / "fence_halab_key"


def post(port: int, signing_key: str, nonce: str | None = None):
    from urllib import error, request

    body = json.dumps({"action": "list", "ts": time.time(),
                       "nonce": nonce or os.urandom(8).hex()}).encode()
    req = request.Request(f"http://127.0.0.1:{port}/power", data=body, method="POST",
                          headers={"X-Halab-Signature": fenced.sign(signing_key, body)})
    try:
        with request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read(), resp.headers.get("X-Halab-Signature")
    except error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("X-Halab-Signature")


def test_the_switch_daemon_answers_signed_requests_over_http(daemon):
    """List works with the key and the answer is signed and names the request;
    a request signed with another key is refused with 403."""
    port, key_file = daemon
    key = key_file.read_text().strip()
    status, data, signature = post(port, key, nonce="mine")
    assert status == 200
    assert signature == fenced.sign(key, data), "the answer is not signed with the key"
    reply = json.loads(data)
    assert reply["nonce"] == "mine"
    assert set(reply["nodes"]) == {f"overcloud-controller-{i}" for i in range(3)}
    assert set(reply["nodes"].values()) == {"off"}
    assert post(port, "not-the-key-but-long-enough-to-be-one")[0] == 403
    assert key_file.stat().st_mode & 0o777 == 0o600


def raw(port: int, data: bytes, timeout: float = 10) -> tuple[bytes, float]:
    """Send `data`, read until the switch closes; what it said and how long it took."""
    import socket

    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out, time.monotonic() - t


@pytest.mark.parametrize("length, status", [("-1", b"400"), ("100000", b"400"),
                                            ("many", b"400"), (None, b"400")])
def test_a_bad_length_is_refused_before_reading(daemon, length, status):
    port, _ = daemon
    head = b"POST /power HTTP/1.1\r\nHost: x\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n".encode()
    out, took = raw(port, head + b"\r\n")  # and no body: the switch must not wait for one
    assert out.split()[1] == status, out
    assert took < fenced.SOCKET_TIMEOUT, f"answered after {took:.1f}s: it waited for a body"


def test_a_silent_client_is_dropped_after_the_timeout(daemon):
    port, _ = daemon
    out, took = raw(port, b"POST /power HTTP/1.1\r\n", timeout=3 * fenced.SOCKET_TIMEOUT)
    assert took < 2 * fenced.SOCKET_TIMEOUT, f"held for {took:.1f}s"
    assert took > fenced.SOCKET_TIMEOUT - 1, f"dropped after {took:.1f}s, before the timeout"


def test_connections_beyond_the_limit_are_closed_and_service_resumes(daemon):
    import socket

    port, key_file = daemon
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5)
            for _ in range(fenced.MAX_CONNECTIONS)]
    try:
        # Every slot held by a silent client: the next connection is closed unanswered.
        out, took = raw(port, b"", timeout=fenced.SOCKET_TIMEOUT)
        assert out == b"" and took < 1, f"got {out!r} after {took:.1f}s"
    finally:
        for s in idle:
            s.close()
    # A slot comes back when its handler thread has seen the close, which a loaded host
    # can delay: wait until the switch answers a connection again (any HTTP status).
    from halab.lab import poll

    def answers() -> bool:
        try:
            return raw(port, b"GET / HTTP/1.0\r\n\r\n", timeout=5)[0].startswith(b"HTTP/")
        except OSError:  # still refused: closed before or while we wrote
            return False

    poll.until(answers, 10, "the switch answering again after the idle connections closed",
               error=AssertionError)
    assert post(port, key_file.read_text().strip())[0] == 200


def test_a_peer_outside_the_lab_is_refused_before_its_body_is_read(tmp_path):
    """The switch only serves 198.51.100.0/26 here, so loopback is a stranger: the
    request is refused at once though its promised body never comes."""
    with serving(tmp_path, "198.51.100.0/26") as port:
        out, took = raw(port, b"POST /power HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
    assert out.split()[1] == b"403", out
    assert took < fenced.SOCKET_TIMEOUT


def test_stop_spares_a_process_that_only_looks_like_the_switch(tmp_path, monkeypatch):
    """A PID file naming another process (PID reused, or a command line that merely
    mentions halab and fenced) is not the switch: status says stopped, stop kills nothing."""
    import subprocess
    import sys

    monkeypatch.setenv("HALAB_STATE_DIR", str(tmp_path))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              "halab", "fenced", "serve"])
    try:
        from halab.lab import nodes

        for record in (f"{other.pid}\n", f"{other.pid} {nodes._starttime(other.pid)}\n",
                       f"{other.pid} 1\n"):
            fenced.pid_path().write_text(record)
            assert fenced.running_pid() is None, record
        fenced.stop()
        assert other.poll() is None, "stop killed a process it did not start"
    finally:
        other.kill()
        other.wait(5)


def test_stop_ends_the_switch_another_checkouts_interpreter_started(tmp_path, monkeypatch):
    """A switch started by another checkout's halab (its own venv's python) is the
    lab's all the same: `halab down` from here must end it, or it keeps the port and
    the next lab's switch cannot bind."""
    import subprocess
    import sys

    from halab.lab import nodes, poll

    monkeypatch.setenv("HALAB_STATE_DIR", str(tmp_path))
    (tmp_path / "other" / "halab").mkdir(parents=True)
    (tmp_path / "other" / "halab" / "__main__.py").write_text("import time\ntime.sleep(60)\n")
    python = tmp_path / "other" / "python3"
    python.symlink_to(os.path.realpath(sys.executable))
    switch = subprocess.Popen([str(python), "-m", "halab", "fenced", "serve"],
                              cwd=tmp_path / "other")
    try:
        # a just-spawned child can show an empty command line for a moment
        poll.until(lambda: Path(f"/proc/{switch.pid}/cmdline").read_bytes(), 5,
                   "the switch's command line", interval=0.01, error=AssertionError)
        fenced.pid_path().write_text(f"{switch.pid} {nodes._starttime(switch.pid)}\n")
        assert fenced.running_pid() == switch.pid
        fenced.stop()
        assert switch.wait(5) is not None and not fenced.pid_path().exists()
    finally:
        if switch.poll() is None:
            switch.kill()
            switch.wait(5)


@pytest.fixture
def node_in_a_pid_namespace(tmp_path, monkeypatch):
    """A stand-in node: `unshare` plays nspawn and forks the node's init (with a child
    of its own) into a new PID namespace, recorded as halab records a booted node."""
    import subprocess

    from halab.lab import nodes, poll, topology

    monkeypatch.setenv("HALAB_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(nodes.net, "link_exists", lambda *a, **kw: False)  # no lab links
    node = topology.node("overcloud-controller-1")
    nodes.NodeDir(node).path.mkdir(parents=True)
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "sh", "-c",
                              "sleep 300 & exec sleep 300"])
    nodes._record_init(node, outer.pid)
    init = nodes.node_inits(node)
    assert init, "the stand-in's init was not recorded"
    # The init forks its child as it starts: a node of two processes before the tests.
    assert poll.until(lambda: len(nodes.node_processes(node)) == 2, 10), \
        f"the stand-in has processes {nodes.node_processes(node)}, not an init and a child"
    yield node, outer, init[0]
    for pid in nodes.node_processes(node):
        os.kill(pid, 9)
    outer.kill()
    outer.wait(5)


def test_a_node_whose_init_outlived_its_nspawn_is_on_until_fenced(switch,
                                                                   node_in_a_pid_namespace):
    from halab.lab import nodes

    node, outer, init = node_in_a_pid_namespace
    assert len(nodes.node_processes(node)) == 2  # the init and its child
    outer.kill()  # nspawn dies, the node's processes do not
    outer.wait(5)
    assert nodes.nspawn_pid(node) is None
    assert switch.power(node) == "on", "a running node reported off"
    t = time.monotonic()
    reply = switch.act({"action": "off", "node": node.name})
    took = time.monotonic() - t
    assert reply["status"] == "off"
    assert nodes.node_processes(node) == [], "a process of the fenced node survived"
    assert took < 2, f"the switch answered off after {took:.1f}s"


def test_off_during_the_boot_delay_keeps_the_node_off(node_in_a_pid_namespace):
    node, _, _ = node_in_a_pid_namespace
    switch = fenced.Switch(KEY, boot_delay=30)
    assert switch.act({"action": "off", "node": node.name})["status"] == "off"
    assert switch.act({"action": "on", "node": node.name})["status"] == "on"  # in POST
    assert switch.act({"action": "off", "node": node.name})["status"] == "off"
    assert not switch.booting


def test_start_refuses_a_port_another_process_serves(tmp_path, monkeypatch):
    """With the port already served (a switch left over from another lab), a new
    switch would die on bind while the connect check found the old one: refused."""
    import socket

    monkeypatch.setenv("HALAB_STATE_DIR", str(tmp_path))
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        monkeypatch.setattr(fenced, "bind_address", lambda: "127.0.0.1")
        monkeypatch.setattr(fenced, "port", lambda: held.getsockname()[1])
        monkeypatch.setattr(fenced.net, "netns_alive", lambda: True)
        with pytest.raises(HalabError, match="already served"):
            fenced.start()
    assert not fenced.pid_path().exists()
