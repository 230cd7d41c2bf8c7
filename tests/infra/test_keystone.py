"""Keystone active/active: a Pacemaker clone on every controller behind HAProxy on the
public VIP (TLS, the lab CA's certificate) and the internal VIP (plain HTTP), one
database on Galera, the same fernet keys everywhere."""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib import request

import pytest
from conftest import cluster_state, haproxy_servers, wait_for

from halab.cluster import keystone


@pytest.fixture(scope="module")
def clouds(inventory) -> Path:
    return inventory.secrets_dir / "clouds.yaml"


@pytest.fixture(scope="module")
def cloud(clouds) -> keystone.Cloud:
    return keystone.load(clouds)


def port(inventory) -> int:
    return inventory.setting("keystone", "keystone_port")


def openstack(clouds: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The openstack client from the host, as a user runs it."""
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds), "OS_CLOUD": "openstack-ha-lab"}
    return subprocess.run(["openstack", *args, "-f", "json"], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_keystone_clone_runs_on_every_controller(any_node, inventory):
    assert sorted(cluster_state(any_node)["started"].get("openstack-keystone-clone", [])) == \
        sorted(inventory)


def test_only_pacemaker_starts_keystone(host):
    assert not host.service("keystone").is_enabled
    assert host.service("keystone").is_running


def test_uwsgi_listens_on_the_node_address_not_the_vips(host, inventory):
    addresses = inventory[host.backend.get_hostname()]["ha_addresses"]
    assert host.socket(f"tcp://{addresses['internal']}:{port(inventory)}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port(inventory)}").is_listening
    assert not host.socket(f"tcp://{addresses['external']}:{port(inventory)}").is_listening


def test_keystone_is_ordered_after_galera_promotion_and_memcached(any_node):
    xml = ET.fromstring(any_node.check_output("cibadmin --query --scope constraints"))
    orders = {(o.get("first"), o.get("first-action"), o.get("then")) for o in xml.iter("rsc_order")}
    assert ("galera-master", "promote", "openstack-keystone-clone") in orders
    assert ("memcached-clone", "start", "openstack-keystone-clone") in orders


def test_haproxy_checks_every_keystone_backend_over_http(inventory):
    servers = haproxy_servers(inventory, "keystone")
    assert sorted(servers) == sorted(inventory)
    assert {s["bck"] for s in servers.values()} == {"0"}  # all active: round robin
    wait_for(lambda: {n: (s["status"], s["check_status"])
                      for n, s in haproxy_servers(inventory, "keystone").items()
                      if (s["status"], s["check_status"]) != ("UP", "L7OK")} == {},
             30, 1, "every keystone backend UP by its HTTP check")


@pytest.mark.parametrize("vip_name, scheme", [("public", "https"), ("internal_api", "http")])
def test_token_issue_through_each_vip(cloud, inventory, vip_name, scheme):
    target = cloud.at(f"{scheme}://{inventory.vip(vip_name)}:{port(inventory)}")
    token, body = keystone.issue(target)
    assert token, f"no token through {target.auth_url}"
    assert body["token"]["project"]["name"] == cloud.project
    assert keystone.validate(target.auth_url, token, cacert=target.cacert) == 200


def test_the_public_endpoint_is_tls_with_the_lab_ca_and_only_tls(cloud, inventory):
    address = inventory.vip("public")
    assert cloud.auth_url == f"https://{address}:{port(inventory)}/v3"
    assert cloud.cacert == str(inventory.secrets_dir / "tls" / "ca.crt")
    with socket.create_connection((address, port(inventory)), timeout=5) as raw, \
            keystone.tls(cloud.cacert).wrap_socket(raw, server_hostname=address) as conn:
        assert conn.version() in ("TLSv1.2", "TLSv1.3")
        names = conn.getpeercert()["subjectAltName"]
    assert ("IP Address", address) in names
    # The system's CAs do not know the lab's: a client without the CA refuses the server.
    with pytest.raises(ssl.SSLCertVerificationError), \
            socket.create_connection((address, port(inventory)), timeout=5) as raw, \
            ssl.create_default_context().wrap_socket(raw, server_hostname=address):
        pass
    # Plain HTTP to the TLS port gets no API answer.
    assert keystone.answers(f"http://{address}:{port(inventory)}/v3", timeout=5)[0] in (0, 400)


def test_keystone_believes_haproxy_not_the_clients_forwarded_headers(cloud):
    """Keystone builds its links from the proxy headers: HAProxy sets scheme and client
    address and drops what the client claimed (host, scheme, prefix)."""
    spoofed = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "attacker.example",
               "X-Forwarded-Prefix": "/evil", "Forwarded": "proto=http;host=attacker.example"}
    req = request.Request(cloud.auth_url, headers=spoofed)
    with request.urlopen(req, timeout=5, context=keystone.tls(cloud.cacert)) as resp:
        links = json.loads(resp.read())["version"]["links"]
    assert {link["href"].rstrip("/") for link in links if link["rel"] == "self"} == {
        cloud.auth_url}


def test_every_node_accepts_the_tokens_of_every_other(cloud, inventory):
    urls = {n: f"http://{a}:{port(inventory)}" for n, a in inventory.addresses().items()}
    for issuer, url in urls.items():
        token, _ = keystone.issue(cloud.at(url))
        assert token, issuer
        for validator, other in urls.items():
            # The time tells a node that never answered (the timeout) from a refusal.
            t = time.monotonic()
            status = keystone.validate(f"{other}/v3", token)
            assert status == 200, \
                f"{issuer} -> {validator}: {status} after {time.monotonic() - t:.1f}s"


def test_fernet_and_credential_keys_are_identical_on_every_node(nodes):
    for repo in ("fernet-keys", "credential-keys"):
        seen = {}
        for name, node in nodes.items():
            d = node.file(f"/etc/keystone/{repo}")
            assert d.user == "keystone" and d.mode == 0o700, (name, repo)
            seen[name] = node.check_output(f"cd /etc/keystone/{repo} && sha256sum * | sort")
            for line in seen[name].splitlines():
                f = node.file(f"/etc/keystone/{repo}/{line.split()[1]}")
                assert f.user == "keystone" and f.mode == 0o600, (name, repo, f.path)
        assert len(set(seen.values())) == 1, seen
        assert len(next(iter(seen.values())).splitlines()) >= 2  # staged and primary


def test_openstack_client_from_the_host(clouds, inventory):
    issued = openstack(clouds, "token", "issue")
    assert issued.returncode == 0, issued.stderr
    assert json.loads(issued.stdout)["id"]
    listed = openstack(clouds, "endpoint", "list")
    assert listed.returncode == 0, listed.stderr
    urls = {(e["Interface"], e["URL"]) for e in json.loads(listed.stdout)}
    public = f"https://{inventory.vip('public')}:{port(inventory)}/v3"
    internal = f"http://{inventory.vip('internal_api')}:{port(inventory)}/v3"
    assert {("public", public), ("internal", internal), ("admin", internal)} <= urls


def test_no_default_credentials(cloud, clouds):
    for password in ("admin", "password", "secret", "openstack", ""):
        guess = keystone.Cloud(cloud.auth_url, cloud.username, password, cloud.project)
        assert keystone.issue(guess)[0] is None, f"admin/{password!r} works"
    assert len(cloud.password) >= 32
    assert stat.S_IMODE(clouds.stat().st_mode) == 0o600
    assert stat.S_IMODE((clouds.parent / "galera_user_keystone").stat().st_mode) & 0o077 == 0


def test_keystone_conf_is_not_world_readable(host):
    f = host.file("/etc/keystone/keystone.conf")
    assert f.group == "keystone" and f.mode == 0o640
    assert "connection = mysql+pymysql://keystone:" in f.content_string


def test_a_draining_node_leaves_haproxy_and_comes_back(nodes, inventory, cloud):
    """The stop's drain file fails /healthcheck: HAProxy takes the node out while
    tokens keep coming through the VIP; without the file it is back."""
    name, node = next(iter(nodes.items()))
    drain = inventory.setting("keystone", "keystone_drain_file")

    def status() -> str:
        return haproxy_servers(inventory, "keystone")[name]["status"]

    node.check_output(f"runuser -u keystone -- touch {drain}")
    try:
        wait_for(lambda: status() == "DOWN", 15, 0.5, f"{name} DOWN in HAProxy")
        for _ in range(3):  # round robin over what is left: every issue lands elsewhere
            assert keystone.issue(cloud)[0]
    finally:
        node.check_output(f"rm -f {drain}")
    wait_for(lambda: status() == "UP", 15, 0.5, f"{name} UP again in HAProxy")
