"""The fault backends' parts that need no cluster: how a remote cluster is reached,
the fence agent driven from this machine (the real fence_halab against the real
switch on loopback), the safety check, the partition's removal and the VIP feed's sampling."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from test_fenced import serving

from halab.cluster.declared import ROOT, Declared
from halab.cluster.remote import Host
from halab.errors import HalabError
from halab.failover import faults
from halab.lab import poll

NODES = [f"overcloud-controller-{i}" for i in range(3)]


def declared(shared: dict, per_host: dict | None = None) -> Declared:
    return Declared({n: {**shared, **(per_host or {}).get(n, {})} for n in NODES})


def test_a_host_is_reached_as_the_inventory_says():
    h = Host.from_vars("c0", {"ansible_host": "192.0.2.10", "ansible_user": "admin",
                              "ansible_port": 2222, "ansible_ssh_private_key_file": "/k",
                              "ansible_ssh_common_args": "-o ProxyJump=bastion"})
    argv = h.command("pcs status")
    assert argv[:2] == ["ssh", "-o"] and "admin@192.0.2.10" in argv
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-i") + 1] == "/k"
    assert "ProxyJump=bastion" in argv
    assert argv[-1] == "sudo -n sh -c 'pcs status'", "a non-root user runs commands through sudo"
    root = Host.from_vars("c1", {"ansible_host": "192.0.2.11"})
    assert root.user == "root" and root.command("true")[-1] == "true"


def test_fence_options_for_this_machine():
    """Shared options, then the host's, then this machine's own (its key or password
    script); Pacemaker's pcmk_* options are not the agent's; the node is the plug."""
    d = declared({"ha_fencing": {"agent": "fence_ipmilan",
                                 "options": {"username": "admin", "lanplus": "1"}},
                  "ha_failover_fence": {"options": {"password_script": "cat /root/bmc"}}},
                 {NODES[0]: {"ha_fence_options": {"ip": "192.0.2.110",
                                                  "pcmk_delay_base": "5s"}}})
    f = faults.RemoteFaults(d)
    assert f.fence_options(NODES[0]) == {
        "username": "admin", "lanplus": "1", "ip": "192.0.2.110",
        "password_script": "cat /root/bmc", "plug": NODES[0]}
    assert f.agent() == "fence_ipmilan"
    assert faults.fence_agent_input({"ip": "a", "action": "off"}) == "ip=a\naction=off\n"


def test_power_faults_need_fence_devices():
    f = faults.RemoteFaults(declared({}))
    with pytest.raises(HalabError, match="no ha_fencing"):
        f.power_off(NODES[0])


def test_the_fence_agent_runs_here_with_its_options_on_stdin(tmp_path):
    """fence_halab, run from this machine with the switch's key, reads the switch's
    power state of a node; `off` of a node that is off succeeds, as fencing requires.
    A wrong key is a failed call, not a node that is off."""
    with serving(tmp_path, "127.0.0.0/8") as port:
        key = tmp_path / "secrets" / "fence_halab_key"
        shared = {"ha_fencing": {"agent": "fence_halab",
                                 "options": {"ip": "127.0.0.1", "ipport": str(port),
                                             "key_file": "/etc/cluster/fence_halab.key"}},
                  "ha_failover_fence": {"agent": "roles/fencing/files/fence_halab",
                                        "options": {"key_file": str(key)}}}
        f = faults.RemoteFaults(declared(shared))
        assert f.agent() == str(ROOT / "roles/fencing/files/fence_halab")
        assert f.powered(NODES[1]) is False
        f.power_off(NODES[1])
        wrong = tmp_path / "wrong.key"
        wrong.write_text("x" * 40)
        shared["ha_failover_fence"]["options"]["key_file"] = str(wrong)
        with pytest.raises(HalabError, match="status overcloud-controller-1: exit"):
            faults.RemoteFaults(declared(shared)).powered(NODES[1])


def test_lab_faults_only_on_the_lab():
    example = Declared.load(ROOT / "inventory" / "example")
    assert faults.for_inventory(example).kind == "remote"
    with pytest.raises(HalabError, match="only on the lab's own inventory"):
        faults.for_inventory(example, "lab")


def test_faults_on_real_machines_need_a_yes():
    """The plan is shown, nothing is done, and the exit says why."""
    proc = subprocess.run([sys.executable, "-m", "halab", "failover", "--inventory",
                           str(ROOT / "inventory" / "example"), "power-loss-dc", "partition",
                           "--runs", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "power-loss-dc: power the DC OFF through its fence device" in proc.stdout
    assert "partition: load nftables table inet halab_partition on the node" in proc.stdout
    assert "without --yes" in proc.stderr


class LocalHost(Host):
    """A host whose 'ssh' is a local shell: the feed's reading, not ssh, is tested."""

    def command(self, command: str) -> list[str]:
        return ["sh", "-c", command]

    def answers(self, timeout: float = 0.5) -> bool:
        return True


def test_the_address_feed_keeps_the_latest_sample_and_forgets_a_stale_one():
    feed = faults._Feed(LocalHost("n0", "127.0.0.1"))
    before = time.time()
    feed.start()
    try:
        read_at, got = poll.until(feed.latest, 10, "a sample")
        assert " 127.0.0.1/8 " in got
        assert before - 1 <= read_at <= time.time()  # when the node read them
    finally:
        feed.stop()
    # Stopped, its last sample ages out: unknown, not the last thing seen.
    poll.until(lambda: feed.latest() is None, 5 * feed.STALE, "the sample to go stale")


def test_the_partition_script_keeps_this_machines_ssh_and_schedules_its_removal():
    """nft checks the table the partition loads (nft -c: parsed, not applied)."""
    ran: list[str] = []
    f = faults.RemoteFaults(declared({}))
    f.sh = lambda name, script, timeout=60, check=True: ran.append(script)
    f.isolate(NODES[2])
    assert f.cut == {NODES[2]} and not f.reachable(NODES[2])
    script = ran[0]
    assert script.index("systemd-run") < script.index("nft -f"), "removal scheduled first"
    table = script.split("<<EOF\n", 1)[1].split("\nEOF", 1)[0]
    table = table.replace("$fam", "ip").replace("$c", "198.51.100.1")
    proc = subprocess.run(["/usr/sbin/nft", "-c", "-f", "-"], input=table, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_heal_waits_for_a_rebooting_nodes_sshd_and_retries_the_removal(monkeypatch):
    """A node fenced while cut off is still booting when the restore heals it: its sshd
    answers late and the first login fails. The waits are bounded: a node that never
    lets us in is an error naming the last failure, and it stays counted as cut off."""
    monkeypatch.setattr(poll.time, "sleep", lambda s: None)  # the polls' pauses
    f = faults.RemoteFaults(declared({}))
    name = NODES[2]
    f.cut.add(name)
    answers = iter([False, False, True])
    f.hosts[name] = SimpleNamespace(answers=lambda: next(answers))
    ran: list[str] = []

    def sh(node, script, timeout=60, check=True):
        ran.append(script)
        if len(ran) == 1:
            raise HalabError("exit 255: ssh: connection refused")

    f.sh = sh
    f.heal(name)
    assert next(answers, "asked until it answered") == "asked until it answered"
    assert len(ran) == 2 and "nft delete table inet halab_partition" in ran[1]
    assert name not in f.cut

    def refused(node, script, timeout=60, check=True):
        raise HalabError("exit 255: ssh: timeout")

    f.cut.add(name)
    f.hosts[name] = SimpleNamespace(answers=lambda: True)
    f.sh = refused
    monkeypatch.setattr(faults, "HEAL_RETRY", 0)
    with pytest.raises(faults.FaultError, match="last error: exit 255: ssh: timeout"):
        f.heal(name)
    assert name in f.cut
