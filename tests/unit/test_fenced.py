"""The lab power switch without a lab: only signed, fresh, unreplayed
requests from the lab network, for on/off/status/list of lab nodes."""

from __future__ import annotations

import json
import os
import time

import pytest

from halab import fenced

KEY = "k" * 64
LAB_PEER = "198.51.100.10"


def signed(**req) -> tuple[bytes, str]:
    body = json.dumps({"ts": time.time(), "nonce": req.pop("nonce", "n1"), **req}).encode()
    return body, fenced.sign(KEY, body)


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
        switch.check(body, fenced.sign(KEY, body), LAB_PEER)


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


def test_the_switch_daemon_answers_signed_requests_over_http(tmp_path):
    """The real daemon (`halab fenced serve`) on loopback: list works with the key,
    and a request signed with another key is refused with 403."""
    import subprocess
    import sys
    from urllib import error, request

    from daemons import free_port, wait_listening

    free = free_port()
    env = {**os.environ, "HALAB_STATE_DIR": str(tmp_path), "HALAB_FENCED_ADDRESS": "127.0.0.1",
           "HALAB_FENCED_PORT": str(free), "HALAB_FENCED_CLIENTS": "127.0.0.0/8"}
    proc = subprocess.Popen([sys.executable, "-m", "halab", "fenced", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_listening(proc, free, "the switch")
        key = (tmp_path / "secrets" / "fence_halab_key").read_text().strip()

        def post(signing_key: str):
            body = json.dumps({"action": "list", "ts": time.time(),
                               "nonce": os.urandom(8).hex()}).encode()
            req = request.Request(f"http://127.0.0.1:{free}/power", data=body, method="POST",
                                  headers={"X-Halab-Signature": fenced.sign(signing_key, body)})
            try:
                with request.urlopen(req, timeout=5) as resp:
                    return resp.status, json.loads(resp.read())
            except error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        status, reply = post(key)
        assert status == 200
        assert set(reply["nodes"]) == {f"overcloud-controller-{i}" for i in range(3)}
        assert set(reply["nodes"].values()) == {"off"}
        assert post("not-the-key")[0] == 403
        assert (tmp_path / "secrets" / "fence_halab_key").stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def node_in_a_pid_namespace(tmp_path, monkeypatch):
    """A stand-in node: `unshare` plays nspawn and forks the node's init (with a child
    of its own) into a new PID namespace, recorded as halab records a booted node."""
    import subprocess

    from halab import nodes, topology

    monkeypatch.setenv("HALAB_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(nodes.net, "link_exists", lambda *a, **kw: False)  # no lab links
    node = topology.node("overcloud-controller-1")
    nodes.NodeDir(node).path.mkdir(parents=True)
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "sh", "-c",
                              "sleep 300 & exec sleep 300"])
    nodes._record_init(node, outer.pid)
    init = nodes.node_inits(node)
    assert init, "the stand-in's init was not recorded"
    yield node, outer, init[0]
    for pid in nodes.node_processes(node):
        os.kill(pid, 9)
    outer.kill()
    outer.wait(5)


def test_a_node_whose_init_outlived_its_nspawn_is_on_until_fenced(switch,
                                                                   node_in_a_pid_namespace):
    from halab import nodes

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
