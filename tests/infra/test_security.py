"""What the lab leaves open: on the host its state (secrets, the nodes' trees whose
configs hold passwords) is root's alone; on the nodes every daemon binds an address of
its network, and on the external network only HAProxy listens, on VIPs; a port scan
from the host finds exactly the ports the firewall data declares and something serves."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from ansible_collections.halab.ha.plugins.filter.ha_cluster import firewall_rules, port_range
from conftest import lab_only

from halab.cluster import declared
from halab.lab import topology

ROOT = Path(__file__).resolve().parents[2]


def listeners(host) -> list[tuple[str, int, str]]:
    """(address, port, process) of every TCP listener but loopback's."""
    found = []
    for line in host.check_output("ss -Hltnp").splitlines():
        local, users = line.split()[3], line.split(None, 5)[5] if len(line.split()) > 5 else ""
        address, port = local.rsplit(":", 1)
        address = address.strip("[]")
        if address in ("127.0.0.1", "::1") or address.startswith("127."):
            continue
        names = re.findall(r'\("([^"]+)"', users)
        found.append((address, int(port), ",".join(sorted(set(names))) or "?"))
    return found


def test_no_daemon_listens_on_every_address(host):
    wild = [x for x in listeners(host) if x[0] in ("0.0.0.0", "::", "*")]
    assert not wild, f"listening on every address: {wild}"


def test_only_haproxy_listens_on_the_external_network_and_only_on_vips(host, inventory):
    hv = inventory[host.backend.get_hostname()]
    external = ipaddress.ip_network(hv["ha_networks"]["external"]["cidr"])
    vips = {v["address"] for v in hv["ha_vips"]} | {
        v["address"] for v in hv.get("ha_peer_vips", [])}
    outside = [x for x in listeners(host) if x[0] not in ("0.0.0.0", "::", "*")
               and ipaddress.ip_address(x[0]) in external
               and (x[2] != "haproxy" or x[0] not in vips)]
    assert not outside, f"on the external network besides HAProxy on a VIP: {outside}"


@lab_only
def test_the_labs_state_is_root_only():
    top = topology.state_dir()
    dirs = [top, top / "secrets", top / "nodes",
            *(top / "nodes" / n.name for n in topology.NODES)]
    loose = {str(d): oct(d.stat().st_mode & 0o777) for d in dirs
             if d.stat().st_uid != 0 or d.stat().st_mode & 0o077}
    assert not loose, f"reachable by other host users: {loose}"
    secrets = [p for p in (top / "secrets").rglob("*") if p.is_file()]
    assert secrets
    readable = {str(p): oct(p.stat().st_mode & 0o777) for p in secrets
                if p.stat().st_mode & 0o077 or not stat.S_ISREG(p.stat().st_mode)}
    assert not readable, f"secrets readable beyond root: {readable}"


def test_no_secret_in_any_process_arguments():
    """`make test` runs molecule under `halab argv-watch`: every process's arguments on
    the host (the nodes' included) sampled through create and converge."""
    path = os.environ.get("HALAB_ARGV_REPORT")
    if not path:
        pytest.skip("argv is watched under `make test` (HALAB_ARGV_REPORT)")
    report = json.loads(Path(path).read_text())
    assert report["samples"] > 100, f"the watch barely ran: {report['samples']} samples"
    assert not report["leaks"], f"secrets in process arguments: {report['leaks']}"


def test_no_secret_in_reports_or_the_test_log():
    hidden = declared.secret_values(topology.secrets_dir())
    assert hidden
    files = [p for p in (ROOT / "reports").rglob("*")
             if p.is_file() and p.suffix != ".png" and p.stat().st_size < 64 << 20]
    log = os.environ.get("HALAB_TEST_LOG")
    if log:
        assert Path(log) in files, "the test log is not in reports/"
    found = {}
    for path in files:
        text = path.read_text(errors="replace")
        names = sorted({name for value, name in hidden.items() if value in text})
        if names:
            found[str(path.relative_to(ROOT))] = names
    assert not found, f"secret values in {found}"


def declared_open(hv: dict) -> tuple[dict[str, set[int]], dict[str, set[int]]]:
    """({address: TCP ports}, {address: ports of ranges}) the firewall data opens on one
    node. A range holds short-lived listeners (rabbitmqctl's distribution port): open
    to the firewall, but not always served."""
    rules = firewall_rules(hv["firewall_services"], hv["haproxy_services"],
                           hv["ha_vips"] + hv.get("ha_peer_vips", []), hv["ha_networks"],
                           hv["ha_addresses"])
    single: dict[str, set[int]] = {}
    ranged: dict[str, set[int]] = {}
    for rule in rules:
        for port in rule["tcp"]:
            target = ranged if "-" in port else single
            for address in rule["daddr"]:
                target.setdefault(address, set()).update(port_range(port))
    return single, ranged


def scan(addresses: list[str]) -> dict[str, set[int]]:
    """Every TCP port of each address, SYN scan (nmap), from the host: {address: open}.
    Two tries per port; dropped ports cost the timeout, so nmap keeps a high rate."""
    out = subprocess.run(
        ["nmap", "-sS", "-Pn", "-n", "-p-", "--max-retries", "1", "--min-rate", "20000",
         "--host-timeout", "240s", "-oX", "-", *addresses],
        capture_output=True, text=True, timeout=300, check=True).stdout
    found: dict[str, set[int]] = {a: set() for a in addresses}
    for host in ET.fromstring(out).iter("host"):
        address = host.find("address").get("addr")
        for port in host.iter("port"):
            if port.find("state").get("state") == "open":
                found[address].add(int(port.get("portid")))
    return found


def test_a_port_scan_finds_exactly_the_declared_services(nodes, inventory):
    """What answers on every node address and VIP is what the firewall data opens there
    and some daemon listens on: nothing undeclared (the firewall drops it), and nothing
    declared (outside ranges) and served is missing (the scan itself works)."""
    fixed: dict[str, set[int]] = {}
    declared_ports: dict[str, set[int]] = {}
    serving: set[tuple[str, int]] = set()
    for name, node in nodes.items():
        single, ranged = declared_open(inventory[name])
        for address in single.keys() | ranged.keys():
            fixed.setdefault(address, set()).update(single.get(address, set()))
            declared_ports.setdefault(address, set()).update(
                single.get(address, set()) | ranged.get(address, set()))
        serving |= {(a, p) for a, p, _ in listeners(node)}
    addresses = sorted({a for h in inventory.values() for a in h["ha_addresses"].values()}
                       | set(inventory.vips().values()), key=ipaddress.ip_address)
    found = scan(addresses)
    expected = {a: {p for p in fixed.get(a, set()) if (a, p) in serving} for a in addresses}
    undeclared = {a: sorted(found[a] - declared_ports.get(a, set())) for a in addresses
                  if found[a] - declared_ports.get(a, set())}
    missing = {a: sorted(expected[a] - found[a]) for a in addresses if expected[a] - found[a]}
    assert not undeclared, f"open beyond the firewall data: {undeclared}"
    assert not missing, f"declared and listening, but the scan found them closed: {missing}"
    external = {h["ha_addresses"]["external"] for h in inventory.values()}
    assert not any(found[a] for a in external), "a node's external address answers"


def test_the_firewall_drops_and_counts_the_rest(host, inventory):
    ruleset = host.check_output("nft list table inet ha_firewall")
    for network in inventory[host.backend.get_hostname()]["ha_networks"]:
        assert f'drop comment "{network}: not declared"' in ruleset
    assert "policy drop" in ruleset
