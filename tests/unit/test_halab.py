"""halab without a running lab: topology, inventory, CLI errors, crm_mon parsing."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from halab.cluster import status
from halab.errors import HalabError
from halab.lab import cgroup, image, topology

ROOT = Path(__file__).resolve().parents[2]
DOC_RANGES = [ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("203.0.113.0/24")]


def halab(*args: str, env: dict | None = None, user: str | None = None):
    cmd = [sys.executable, "-m", "halab", *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, **(env or {})})


def test_every_lab_address_is_in_a_documentation_range_and_unique():
    seen = []
    for net in topology.NETWORKS:
        cidr = ipaddress.ip_network(net.cidr)
        assert any(cidr.subnet_of(r) for r in DOC_RANGES), net.cidr
        assert not cidr.overlaps(ipaddress.ip_network("192.0.2.0/24"))
        addrs = [net.host_address] + [n.address(net.name) for n in topology.NODES]
        assert all(ipaddress.ip_address(a) in cidr for a in addrs)
        seen += addrs
    assert len(seen) == len(set(seen))
    nets = [ipaddress.ip_network(n.cidr) for n in topology.NETWORKS]
    assert not nets[0].overlaps(nets[1])


def test_interface_names_fit_the_kernel_limit():
    names = [n.veth(net) for n in topology.NODES for net in topology.NETWORKS]
    names += [net.host_if for net in topology.NETWORKS] + [net.bridge for net in topology.NETWORKS]
    assert all(len(x) <= 15 for x in names)
    assert len(names) == len(set(names))


def test_committed_lab_inventory_matches_the_topology():
    committed = (ROOT / "inventory" / "lab" / "hosts.yml").read_text()
    # regenerate with: halab inventory --write inventory/lab/hosts.yml
    assert committed == topology.render_inventory()


def test_inventory_command_prints_it():
    proc = halab("inventory")
    assert proc.returncode == 0
    assert proc.stdout == topology.render_inventory()


def test_node_lookup_accepts_name_or_index():
    assert topology.node("overcloud-controller-1").index == 1
    assert topology.node("2").name == "overcloud-controller-2"


def test_unknown_node_is_a_clear_error(tmp_path):
    proc = halab("kill", "overcloud-controller-9", env={"HALAB_STATE_DIR": str(tmp_path)})
    assert proc.returncode == 1
    assert "unknown node 'overcloud-controller-9'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_kill_of_a_stopped_node_is_a_clear_error(tmp_path):
    proc = halab("kill", "overcloud-controller-0", env={"HALAB_STATE_DIR": str(tmp_path)})
    assert proc.returncode == 1
    assert "overcloud-controller-0 is not running" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to drop to another user")
def test_missing_root_rights_is_a_clear_error(tmp_path):
    tmp_path.chmod(0o777)
    proc = halab("up", env={"HALAB_STATE_DIR": str(tmp_path)}, user="nobody")
    assert proc.returncode == 1
    assert "halab needs root" in proc.stderr
    assert "Traceback" not in proc.stderr


HYBRID = """\
35 24 0:30 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw
37 35 0:32 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
38 35 0:33 / /sys/fs/cgroup/memory rw,nosuid shared:12 - cgroup cgroup rw,memory
"""


def test_each_node_gets_its_own_cgroup_in_every_hierarchy_systemd_uses():
    assert cgroup.hierarchies(HYBRID) == [Path("/sys/fs/cgroup/unified"),
                                          Path("/sys/fs/cgroup/systemd")]
    unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
    assert cgroup.hierarchies(unified) == [Path("/sys/fs/cgroup")]


def test_cgroup_wrapper_moves_itself_before_it_runs_the_command(tmp_path):
    procs = tmp_path / "cgroup.procs"
    out = subprocess.run(["sh", "-c", cgroup.MOVE, "t", str(procs), "--", "sh", "-c",
                          "echo $$"], capture_output=True, text=True, check=True)
    assert procs.read_text().strip() == out.stdout.strip()  # one process, moved, then exec
    bad = subprocess.run(["sh", "-c", cgroup.MOVE, "t", str(tmp_path / "no/such"), "--",
                          "true"], capture_output=True, text=True)
    assert bad.returncode == 125


def test_image_key_follows_the_package_list(monkeypatch):
    before = image.image_key()
    monkeypatch.setattr(image, "STACK_PACKAGES", (*image.STACK_PACKAGES, "hello"))
    assert image.image_key() != before


def test_image_build_without_mmdebstrap_names_the_step(tmp_path, monkeypatch):
    monkeypatch.setenv("HALAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(HalabError, match="image build: mmdebstrap is not installed"):
        image.ensure(progress=lambda _: None)


@pytest.fixture(scope="module")
def simulated_status(tmp_path_factory):
    """A real crm_mon XML: a CIB built with pcs -f, run through crm_simulate."""
    if shutil.which("pcs") is None or shutil.which("crm_simulate") is None:
        pytest.skip("pcs/crm_simulate not installed (make host-deps)")
    d = tmp_path_factory.mktemp("cib")
    cib = d / "cib.xml"
    empty = subprocess.run(["cibadmin", "--empty"], capture_output=True, text=True,
                           check=True).stdout
    # crm_simulate places nothing without quorum; the live cluster records it here.
    cib.write_text(empty.replace("<cib ", '<cib have-quorum="1" ', 1))
    env = {**os.environ, "CIB_file": str(cib)}

    def pcs(*args):
        subprocess.run(["pcs", "-f", str(cib), *args], check=True, capture_output=True,
                       timeout=60)

    pcs("property", "set", "stonith-enabled=false")
    pcs("resource", "create", "ip-198.51.100.80", "ocf:heartbeat:IPaddr2",
        "ip=198.51.100.80", "cidr_netmask=32")
    pcs("resource", "create", "memcached", "ocf:heartbeat:Dummy", "clone", "memcached-clone")
    out = d / "out.xml"
    names = [n.name for n in topology.NODES]
    sim = ["crm_simulate", "--xml-file", str(cib), "--simulate", "--save-output", str(out)]
    for n in names:
        sim += ["--node-up", n]
    subprocess.run(sim, check=True, capture_output=True, timeout=60)
    text = subprocess.run(["crm_mon", "--one-shot", "--output-as=xml"], check=True,
                          capture_output=True, text=True, timeout=60,
                          env={**env, "CIB_file": str(out)}).stdout
    return text, names


def test_status_view_reads_real_crm_mon_xml(simulated_status):
    text, names = simulated_status
    view = status.parse_crm_mon(text)
    assert set(view["nodes"]) == set(names)
    assert all(state == "online" for state in view["nodes"].values())
    assert sorted(view["resources"]["memcached-clone"]["Started"]) == sorted(names)
    assert len(view["resources"]["ip-198.51.100.80"]["Started"]) == 1
    assert view["failures"] == []


def test_status_problems_are_none_for_a_healthy_view_and_named_otherwise(simulated_status):
    text, names = simulated_status
    view = {**status.parse_crm_mon(text), "quorum": True}  # a simulation elects no DC
    rows = [{"node": n, "state": "running"} for n in names]
    apis = {"auth_url": "http://x/v3", "token_issued": True,
            "endpoints": [{"service": "keystone", "interface": "public", "status": 300}]}
    assert status.problems(rows, view, apis) == []
    rows[1]["state"] = "stopped"
    view = {**view, "quorum": False, "nodes": {**view["nodes"], names[1]: "offline"},
            "resources": {**view["resources"], "memcached-clone": {
                "Started": names[:1], "Stopped": ["-"], "Starting": names[2:]}},
            "failures": [{"op_key": "memcached_monitor_10000", "node": names[0]}]}
    apis["endpoints"][0]["status"] = None
    assert status.problems(rows, view, apis) == [
        f"{names[1]} stopped", "no quorum", f"{names[1]} offline",
        f"memcached-clone: starting on {names[2]}", "memcached-clone: 1 instance(s) stopped",
        f"failed memcached_monitor_10000 on {names[0]}",
        "keystone public endpoint does not answer"]
    assert status.problems(rows, None, None) == [f"{names[1]} stopped", "no node answers crm_mon"]


@pytest.mark.parametrize("line, parsed", [
    ("default via 192.0.2.1 dev eth0 proto dhcp", ("unicast", "default", "eth0")),
    ("198.51.100.0/26 dev hl-int scope link", ("unicast", "198.51.100.0/26", "hl-int")),
    ("blackhole 10.0.0.0/8 proto static", ("blackhole", "10.0.0.0/8", "")),
    ("unreachable 198.51.100.64/26", ("unreachable", "198.51.100.64/26", "")),
])
def test_route_lines_of_every_type_are_parsed(line, parsed):
    from halab.lab import net

    assert net.parse_route(line) == parsed
