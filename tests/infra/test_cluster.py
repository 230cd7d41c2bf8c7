"""The foundation: three controllers in one quorate Pacemaker/Corosync cluster, with the
CIB matching the data declared in the inventory."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import lab_only

from halab.cluster import crm
from halab.lab import nodes, topology


def test_every_node_online_with_quorum(any_node, inventory):
    mon = ET.fromstring(any_node.check_output(crm.CRM_MON))
    dc = mon.find("summary/current_dc")
    assert dc is not None and dc.get("with_quorum") == "true"
    online = {n.get("name") for n in mon.iter("node") if n.get("online") == "true"}
    assert online == set(inventory)


def test_every_node_sees_the_same_membership(nodes, inventory):
    for name, node in nodes.items():
        members = node.check_output("crm_node --list").splitlines()
        assert sorted(line.split()[1] for line in members if line.endswith("member")) == sorted(
            inventory
        ), name
        assert node.check_output("crm_node --quorum") == "1", name


def test_corosync_uses_knet_with_crypto(host, inventory):
    hv = inventory[host.backend.get_hostname()]
    crypto = inventory.setting("pacemaker", "pacemaker_crypto")
    assert crypto["cipher"] != "none" and crypto["hash"] != "none"
    cmap = host.check_output("corosync-cmapctl totem")
    assert "totem.transport (str) = knet" in cmap
    assert f"totem.crypto_cipher (str) = {crypto['cipher']}" in cmap
    assert f"totem.crypto_hash (str) = {crypto['hash']}" in cmap
    assert f"totem.cluster_name (str) = {hv['pacemaker_cluster_name']}" in cmap


def test_corosync_runs_the_declared_totem(host, inventory):
    totem = inventory[host.backend.get_hostname()].get("pacemaker_totem") or {}
    cmap = dict(line.split(" (", 1) for line in
                host.check_output("corosync-cmapctl totem").splitlines() if " (" in line)
    configured = {k: v.rsplit(" = ", 1)[-1] for k, v in cmap.items()}
    for key, value in totem.items():
        assert configured.get(f"totem.{key}") == str(value), key
    if "token" not in totem:  # corosync's default, nothing configured
        assert "totem.token" not in configured


def test_knet_link_to_every_peer_is_connected(host, inventory):
    me = host.backend.get_hostname()
    status = host.check_output("corosync-cfgtool -n")
    mine = inventory[me]["ha_addresses"]["internal"]
    for peer in set(inventory) - {me}:
        peer_addr = inventory[peer]["ha_addresses"]["internal"]
        assert f"({mine}->{peer_addr}) enabled connected" in status, peer
    assert status.count(" reachable") == len(inventory) - 1


@lab_only
def test_each_lab_node_runs_in_cgroups_of_its_own():
    """Shared, the nodes' systemds create, empty and remove each other's unit cgroups
    (219/CGROUP when a unit restarts on every node at once)."""
    for node in topology.NODES:
        init = nodes.node_inits(node)
        assert init, f"{node.name}: no init recorded"
        for line in Path(f"/proc/{init[0]}/cgroup").read_text().splitlines():
            if line.startswith("0::") or ":name=systemd:" in line:
                assert line.split(":", 2)[2].startswith(f"/halab/{node.name}/"), (node.name, line)


def test_corosync_binds_the_internal_network(host, inventory):
    addr = inventory[host.backend.get_hostname()]["ha_addresses"]["internal"]
    assert host.socket(f"udp://{addr}:5405").is_listening


@pytest.mark.parametrize("service", ["corosync", "pacemaker", "pcsd"])
def test_cluster_services_run_and_start_at_boot(host, service):
    svc = host.service(service)
    assert svc.is_running
    assert svc.is_enabled


def test_pcsd_listens_on_the_cluster_network_with_its_gui_off(host, inventory):
    address = inventory[host.backend.get_hostname()]["ha_addresses"]["internal"]
    assert host.socket(f"tcp://{address}:2224").is_listening
    code = host.check_output(f"curl -sk -o /dev/null -w '%{{http_code}}' https://{address}:2224/ui/")
    assert code == "404", f"pcsd's web GUI answers {code}"


def test_hacluster_has_a_real_password(host):
    shadow = host.check_output("getent shadow hacluster").split(":")[1]
    assert shadow.startswith("$6$"), "hacluster has no sha512 password"


def test_no_default_corosync_config_left(host):
    conf = host.file("/etc/corosync/corosync.conf").content_string
    assert "127.0.0.1" not in conf and "node1" not in conf


def test_cluster_properties_applied(any_node, inventory):
    declared = inventory.shared["pacemaker_properties"]
    for name, value in declared.items():
        got = any_node.check_output(
            f"crm_attribute --type crm_config --name {name} --query --quiet"
        )
        assert got == str(value), name


def test_resource_defaults_applied(any_node, inventory):
    declared = inventory.shared["pacemaker_resource_defaults"]
    shown = any_node.check_output("pcs resource defaults")
    for name, value in declared.items():
        assert f"{name}={value}" in shown


def test_node_role_attributes(any_node, inventory):
    for name, hv in inventory.items():
        for role in hv["ha_node_roles"]:
            got = any_node.check_output(
                f"crm_attribute --type nodes --node {name} --name {role}-role --query --quiet"
            )
            assert got == "true", f"{name} {role}-role"


def test_cib_resources_are_exactly_the_declared_ones(any_node, inventory):
    hv = inventory.shared
    xml = ET.fromstring(any_node.check_output("cibadmin --query --scope resources"))
    live = {p.get("id") for p in xml.iter("primitive")}
    assert live == {r["id"] for r in hv["pacemaker_resources"]} | {
        s["id"] for s in hv.get("pacemaker_stonith", [])
    }
    live_clones = {c.get("id") for c in xml.iter("clone")}
    declared_clones = {
        (r.get("clone") or r.get("promotable"))["id"]
        for r in hv["pacemaker_resources"]
        if r.get("clone") or r.get("promotable")
    }
    assert live_clones == declared_clones


def test_fencing_is_on_with_one_device_per_node_never_on_its_target(any_node, inventory):
    hv = inventory.shared
    if not hv.get("ha_fencing"):
        assert any_node.check_output(
            "crm_attribute --type crm_config --name stonith-enabled --query --quiet") == "false"
        return
    assert any_node.check_output(
        "crm_attribute --type crm_config --name stonith-enabled --query --quiet") == "true"
    from conftest import cluster_state

    started = cluster_state(any_node)["started"]
    for name in inventory:
        where = started.get(f"fence-{name}", [])
        assert len(where) == 1 and where[0] != name, name


def test_the_fence_agent_follows_fence_agents_conventions(host, inventory):
    hv = inventory[host.backend.get_hostname()]
    if not hv.get("ha_fencing"):
        return
    agent = hv["ha_fencing"]["agent"]
    meta = ET.fromstring(host.check_output(f"{agent} -o metadata"))
    assert meta.get("name") == agent
    actions = {a.get("name") for a in meta.iter("action")}
    assert {"on", "off", "reboot", "status", "list", "monitor", "metadata"} <= actions
    described = host.check_output(f"pcs stonith describe {agent}")
    assert agent in described and "ip" in described
    # Options on stdin, as Pacemaker passes them.
    opts = {**hv["ha_fencing"]["options"], "action": "status",
            "plug": host.backend.get_hostname()}
    stdin = "\\n".join(f"{k}={v}" for k, v in opts.items())
    out = host.run(f"printf '{stdin}\\n' | {agent}")
    assert out.rc == 0 and "ON" in out.stdout.upper()
    key = host.file(hv["ha_fencing"]["options"]["key_file"])
    assert key.mode == 0o600 and key.user == "root"
