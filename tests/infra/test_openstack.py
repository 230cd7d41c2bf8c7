"""The seed's OpenStack control plane on every controller: Placement, Glance (images in
Swift), Neutron's API, Nova's APIs and RPC services as Pacemaker clones behind HAProxy,
fake computes; a server boots to ACTIVE and an image reads back byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from conftest import cluster_state, haproxy_servers, wait_for

CLONES = ["openstack-placement-api-clone", "openstack-glance-api-clone",
          "openstack-neutron-api-clone", "openstack-nova-api-clone",
          "openstack-nova-api-metadata-clone", "openstack-nova-conductor-clone",
          "openstack-nova-scheduler-clone"]
BACKENDS = ["placement", "glance", "neutron", "nova_osapi", "nova_metadata"]


@pytest.fixture(scope="module")
def clouds(inventory) -> Path:
    return inventory.secrets_dir / "clouds.yaml"


def openstack(clouds: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """The openstack client from the host, as a user runs it."""
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds), "OS_CLOUD": "openstack-ha-lab"}
    return subprocess.run(["openstack", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def as_json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("clone", CLONES)
def test_each_clone_runs_on_every_controller(any_node, inventory, clone):
    assert sorted(cluster_state(any_node)["started"].get(clone, [])) == sorted(inventory)


@pytest.mark.parametrize("backend", BACKENDS)
def test_haproxy_checks_every_backend(inventory, backend):
    wait_for(lambda: {n: (s["status"], s["check_status"])
                      for n, s in haproxy_servers(inventory, backend).items()
                      if (s["status"], s["check_status"]) != ("UP", "L7OK")} == {},
             60, 1, f"every {backend} backend UP by its HTTP check")
    assert sorted(haproxy_servers(inventory, backend)) == sorted(inventory)


def test_apis_listen_on_the_node_address_only(host, inventory):
    addresses = inventory[host.backend.get_hostname()]["ha_addresses"]
    for name in BACKENDS:
        port = inventory.backend_port(name)
        assert host.socket(f"tcp://{addresses['internal']}:{port}").is_listening, name
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, name


def test_every_compute_and_rpc_service_is_up(clouds, inventory):
    services = as_json(openstack(clouds, "compute", "service", "list", "-f", "json"))
    up = {(s["Binary"], s["Host"]) for s in services if s["State"] == "up"}
    for binary in ("nova-compute", "nova-conductor", "nova-scheduler"):
        assert {h for b, h in up if b == binary} == set(inventory), binary


def test_nova_status_upgrade_check_passes(any_node):
    out = any_node.run("runuser -u nova -- nova-status upgrade check")
    assert out.rc == 0, out.stdout + out.stderr


def test_the_image_reads_back_byte_for_byte(clouds, inventory):
    name = inventory.setting("glance", "glance_image")["name"]
    image = as_json(openstack(clouds, "image", "show", name, "-f", "json"))
    assert image["status"] == "active"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image"
        proc = openstack(clouds, "image", "save", "--file", str(path), name)
        assert proc.returncode == 0, proc.stderr
        data = path.read_bytes()
    assert len(data) == image["size"]
    assert hashlib.md5(data).hexdigest() == image["checksum"]  # glance's own checksum


def test_a_server_boots_to_active_and_is_deleted(clouds, inventory):
    flavor = inventory.setting("nova", "nova_flavor")["name"]
    image = inventory.setting("glance", "glance_image")["name"]
    name = f"halab-test-{uuid.uuid4().hex[:8]}"
    # --nic none needs compute API 2.37 (the client asks for 2.1 by default)
    server = as_json(openstack(clouds, "--os-compute-api-version", "2.37", "server", "create",
                               "--flavor", flavor, "--image", image,
                               "--nic", "none", "--wait", name, "-f", "json"))
    try:
        assert server["status"] == "ACTIVE", server
        assert server["OS-EXT-SRV-ATTR:host"] in inventory
    finally:
        deleted = openstack(clouds, "server", "delete", "--wait", name)
        assert deleted.returncode == 0, deleted.stderr
