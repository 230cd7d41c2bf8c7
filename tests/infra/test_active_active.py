"""The active/active tier: VIPs, the HAProxy clone on the VIPs, the memcached clone."""

from __future__ import annotations

import errno
import socket
import xml.etree.ElementTree as ET
from urllib import error, request

import pytest
from conftest import cluster_state


def vip_holders(nodes) -> dict[str, list[str]]:
    """address -> nodes that really have it configured (not what Pacemaker believes)."""
    held: dict[str, list[str]] = {}
    for name, node in nodes.items():
        for line in node.check_output("ip -o -4 addr show").splitlines():
            addr, prefix = line.split()[3].split("/")
            if prefix == "32":
                held.setdefault(addr, []).append(name)
    return held


def stats_url(inventory) -> str:
    address, port = inventory.stats
    return f"http://{address}:{port}/"


def http_status(url: str, user: str | None = None, password: str | None = None) -> int:
    req = request.Request(url)
    if user:
        mgr = request.HTTPPasswordMgrWithDefaultRealm()
        mgr.add_password(None, url, user, password)
        opener = request.build_opener(request.HTTPBasicAuthHandler(mgr))
    else:
        opener = request.build_opener()
    try:
        with opener.open(req, timeout=3) as resp:
            return resp.status
    except error.HTTPError as exc:
        return exc.code


def test_every_vip_is_up_on_exactly_one_node(nodes, inventory):
    held = vip_holders(nodes)
    for name, address in inventory.vips().items():
        assert len(held.get(address, [])) == 1, name


def test_pacemaker_and_the_kernel_agree_on_vip_owners(nodes, any_node, inventory):
    held = vip_holders(nodes)
    started = cluster_state(any_node)["started"]
    for name, address in inventory.vips().items():
        assert started[inventory.vip_resource(name)] == held[address], name


def test_vips_are_not_all_on_one_controller(nodes, inventory):
    # A fresh placement spreads them one per node (tests/unit/test_scheduler.py); after
    # failovers stickiness keeps them where they went, so only "not all on one" holds.
    held = vip_holders(nodes)
    owners = {held[address][0] for address in inventory.vips().values()}
    assert len(owners) > 1


def test_every_vip_answers_from_the_host(inventory):
    # Each VIP on a port HAProxy serves there (the firewall drops the others).
    for name, address in inventory.vips().items():
        port = next(svc["port"] for svc in inventory.shared["haproxy_services"]
                    if name in svc["vips"])
        s = socket.socket()
        s.settimeout(3)
        try:
            code = s.connect_ex((address, port))
        finally:
            s.close()
        assert code == 0, (name, port, errno.errorcode.get(code, code))


def test_stats_page_answers_on_the_vip_and_needs_its_password(inventory):
    url = stats_url(inventory)
    assert http_status(url) == 401
    assert http_status(url, "admin", "wrong-password") == 401
    assert http_status(url, "admin", inventory.secret("haproxy_stats_password")) == 200


def test_health_endpoint_answers_on_its_vips(inventory):
    hv = inventory.shared
    held = set(inventory.vips())  # keepalived's ha_peer_vips: benchmark only
    assert held & set(hv["haproxy_monitor_vips"])
    port = inventory.setting("haproxy", "haproxy_monitor_port")
    for name in sorted(held & set(hv["haproxy_monitor_vips"])):
        url = f"http://{inventory.vip(name)}:{port}/healthz"
        assert http_status(url) == 200, url
        assert http_status(url.replace("/healthz", "/other")) == 503, url


def test_haproxy_listens_on_the_vip_on_every_node(host, inventory):
    address, port = inventory.stats
    assert host.socket(f"tcp://{address}:{port}").is_listening
    for svc in inventory.shared["haproxy_services"]:
        for name in svc["vips"]:
            address = inventory.vip(name)
            assert host.socket(f"tcp://{address}:{svc['port']}").is_listening, svc["name"]


def test_haproxy_config_is_valid(host):
    assert host.run("haproxy -c -q -f /etc/haproxy/haproxy.cfg").rc == 0


def test_ip_nonlocal_bind(host):
    assert host.sysctl("net.ipv4.ip_nonlocal_bind") == 1


@pytest.mark.parametrize("clone", ["haproxy-clone", "memcached-clone"])
def test_clone_runs_on_every_controller(any_node, inventory, clone):
    started = cluster_state(any_node)["started"]
    assert sorted(started.get(clone, [])) == sorted(inventory)


@pytest.mark.parametrize("service", ["haproxy", "memcached"])
def test_only_pacemaker_starts_the_service(host, service):
    assert not host.service(service).is_enabled
    assert host.service(service).is_running


def test_memcached_listens_on_the_internal_address_only(host, inventory):
    hv = inventory[host.backend.get_hostname()]
    assert host.socket(f"tcp://{hv['ha_addresses']['internal']}:11211").is_listening
    assert not host.socket("tcp://0.0.0.0:11211").is_listening
    assert not host.socket(f"tcp://{hv['ha_addresses']['external']}:11211").is_listening


def test_memcached_set_and_get_on_every_node(inventory):
    for name, hv in inventory.items():
        key = f"halab-{name}".encode()
        with socket.create_connection((hv["ha_addresses"]["internal"], 11211), timeout=3) as s:
            s.sendall(b"set " + key + b" 0 60 5\r\nhello\r\nget " + key + b"\r\n")
            data = b""
            while not data.endswith(b"END\r\n"):
                chunk = s.recv(1024)
                assert chunk, data
                data += chunk
        assert data == b"STORED\r\nVALUE " + key + b" 0 5\r\nhello\r\nEND\r\n"


def test_constraints_as_declared(any_node, inventory):
    xml = ET.fromstring(any_node.check_output("cibadmin --query --scope constraints"))
    orders = {(o.get("first"), o.get("then"), o.get("kind")) for o in xml.iter("rsc_order")}
    colocs = {(c.get("rsc"), c.get("with-rsc"), c.get("score"))
              for c in xml.iter("rsc_colocation")}
    for name in inventory.vips():
        rsc = inventory.vip_resource(name)
        assert (rsc, "haproxy-clone", "Optional") in orders
        assert (rsc, "haproxy-clone", "INFINITY") in colocs
    rules = {}
    for loc in xml.iter("rsc_location"):
        expr = loc.find("rule/expression")
        if expr is not None:
            rules[loc.get("rsc")] = (loc.get("resource-discovery"), expr.get("attribute"),
                                     expr.get("operation"), expr.get("value"))
    assert rules["haproxy-clone"] == ("exclusive", "haproxy-role", "eq", "true")
    assert rules["memcached-clone"] == ("exclusive", "memcached-role", "eq", "true")
