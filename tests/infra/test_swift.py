"""Swift on every controller: proxies behind HAProxy (public VIP over TLS, internal VIP),
storage servers on the nodes' internal addresses, identical three-replica rings, and
every object stored on every node."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from urllib import request

import pytest
from conftest import haproxy_servers, wait_for

from halab.cluster import keystone


@pytest.fixture(scope="module")
def cloud(inventory) -> keystone.Cloud:
    return keystone.load(inventory.secrets_dir / "clouds.yaml")


@pytest.fixture(scope="module")
def session(cloud) -> tuple[str, dict]:
    token, body = keystone.issue(cloud)
    assert token, "no admin token"
    return token, body


def setting(inventory, name: str):
    return inventory.setting("swift", name)


def object_store(body: dict, interface: str) -> str:
    urls = [e["url"] for e in keystone.endpoints(body)
            if e["type"] == "object-store" and e["interface"] == interface]
    assert len(urls) == 1, urls
    return urls[0]


def call(url: str, token: str, method: str = "GET", data: bytes | None = None,
         cacert: str | None = None) -> tuple[int, bytes]:
    req = request.Request(url, data=data, method=method, headers={"X-Auth-Token": token})
    status, _, body = keystone.call_raw(req, 30, cacert)
    return status, body


def test_daemons_run_under_systemd_and_the_others_are_off(host, inventory):
    for unit in setting(inventory, "swift_units"):
        svc = host.service(unit)
        assert svc.is_running and svc.is_enabled, unit
    for unit in setting(inventory, "swift_units_off"):
        svc = host.service(unit)
        assert not svc.is_running and not svc.is_enabled, unit


def test_replicators_and_updaters_pass_from_the_timer(host):
    timer = host.service("swift-consistency.timer")
    assert timer.is_running and timer.is_enabled
    # One pass by hand (start waits for a oneshot): every daemon ran to its end.
    host.check_output("systemctl start swift-consistency.service")
    shown = host.check_output("systemctl show -p Result -p ExecMainStatus swift-consistency")
    assert "Result=success" in shown and "ExecMainStatus=0" in shown, shown


def test_servers_listen_on_the_node_address_only(host, inventory):
    addresses = inventory[host.backend.get_hostname()]["ha_addresses"]
    ports = [setting(inventory, "swift_proxy_port"),
             *setting(inventory, "swift_server_ports").values(), 873]
    for port in ports:
        assert host.socket(f"tcp://{addresses['internal']}:{port}").is_listening, port
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, port


def test_rings_are_identical_three_replicas_one_zone_per_node(nodes, inventory):
    sums = {name: node.check_output("md5sum /etc/swift/*.ring.gz") for name, node in nodes.items()}
    assert len(set(sums.values())) == 1, sums
    any_node = next(iter(nodes.values()))
    for ring in ("account", "container", "object"):
        out = any_node.check_output(
            "python3 -c 'import json, sys; from swift.common.ring import Ring; "
            "r = Ring(\"/etc/swift\", ring_name=sys.argv[1]); "
            "print(json.dumps([r.replica_count, sorted((d[\"zone\"], d[\"ip\"]) "
            "for d in r.devs if d)]))' %s", ring)
        replicas, devs = json.loads(out)
        assert replicas == setting(inventory, "swift_replicas")
        assert [ip for _, ip in devs] == sorted(inventory.addresses().values())
        assert len({zone for zone, _ in devs}) == len(devs), devs


def test_device_and_secrets_are_not_world_readable(host):
    for path in ("/etc/swift/swift.conf", "/etc/swift/proxy-server.conf"):
        f = host.file(path)
        assert f.group == "swift" and f.mode == 0o640, path


def test_haproxy_checks_every_proxy(inventory):
    wait_for(lambda: {n: (s["status"], s["check_status"])
                      for n, s in haproxy_servers(inventory, "swift").items()
                      if (s["status"], s["check_status"]) != ("UP", "L7OK")} == {},
             30, 1, "every swift backend UP by its HTTP check")
    assert sorted(haproxy_servers(inventory, "swift")) == sorted(inventory)


def test_object_round_trip_on_every_proxy_and_a_copy_on_every_node(
        session, cloud, inventory, nodes):
    token, body = session
    public = object_store(body, "public")
    assert public.startswith(f"https://{inventory.vip('public')}:")
    container, name = "halab-test", f"obj-{uuid.uuid4().hex[:8]}"
    data = os.urandom(64 * 1024)
    assert call(f"{public}/{container}", token, "PUT", b"", cloud.cacert)[0] in (201, 202)
    status, _ = call(f"{public}/{container}/{name}", token, "PUT", data, cloud.cacert)
    assert status == 201
    try:
        account = public.rsplit("/", 1)[1]
        port = setting(inventory, "swift_proxy_port")
        for node, address in inventory.addresses().items():
            status, got = call(f"http://{address}:{port}/v1/{account}/{container}/{name}",
                               token)
            assert status == 200 and hashlib.sha256(got).digest() == \
                hashlib.sha256(data).digest(), node
        # Where the object ring puts it, and the .data file on each of those nodes.
        where = next(iter(nodes.values())).check_output(
            "python3 -c 'import json, sys; from swift.common.ring import Ring; "
            "from swift.common.utils import hash_path; r = Ring(\"/etc/swift\", "
            "ring_name=\"object\"); part, devs = r.get_nodes(*sys.argv[1:]); "
            "print(json.dumps([part, hash_path(*sys.argv[1:]), [d[\"ip\"] for d in devs]]))'"
            " %s %s %s", account, container, name)
        part, digest, ips = json.loads(where)
        assert sorted(ips) == sorted(inventory.addresses().values())
        for node_name, node in nodes.items():
            listing = node.check_output(
                "ls /srv/node/%s/objects/%s/%s/%s/", setting(inventory, "swift_device"),
                str(part), digest[-3:], digest)
            assert listing.endswith(".data"), (node_name, listing)
    finally:
        call(f"{public}/{container}/{name}", token, "DELETE", None, cloud.cacert)
