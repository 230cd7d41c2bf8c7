"""Every inventory (lab, vagrant, example) parses and passes the preflight data checks;
crafted bad inventories fail with a message that names the variable; the Vagrantfile
takes its machines from inventory/vagrant."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INVENTORIES = ["lab", "vagrant", "example"]
ENV = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}


def ansible(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=300)


@pytest.mark.parametrize("name", INVENTORIES)
def test_inventory_graph_has_three_controllers(name):
    proc = ansible("ansible-inventory", "-i", f"inventory/{name}", "--graph", "controllers")
    assert proc.returncode == 0, proc.stderr
    assert len(re.findall(r"\|--", proc.stdout)) == 3


@pytest.mark.parametrize("name", INVENTORIES)
def test_site_playbook_syntax(name):
    proc = ansible("ansible-playbook", "--syntax-check", "-i", f"inventory/{name}",
                   "playbooks/site.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", INVENTORIES)
def test_preflight_data_checks_pass(name):
    proc = ansible("ansible-playbook", "-i", f"inventory/{name}", "playbooks/preflight.yml",
                   "--tags", "preflight_data")
    assert proc.returncode == 0, proc.stdout[-3000:]


@pytest.mark.parametrize("name", INVENTORIES)
def test_every_inventory_shares_the_cluster_data(name):
    link = ROOT / "inventory" / name / "group_vars" / "controllers"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "inventory" / "shared" / "group_vars" / "controllers")


def crafted(tmp_path: Path, change) -> Path:
    """A copy of the lab inventory with one mistake made by `change(hosts_yaml)`."""
    inv = tmp_path / "inv"
    shutil.copytree(ROOT / "inventory" / "lab", inv, symlinks=False)
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())
    vips = yaml.safe_load((inv / "group_vars" / "all" / "vips.yml").read_text())
    change(hosts, vips)
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (inv / "group_vars" / "all" / "vips.yml").write_text(yaml.safe_dump(vips))
    return inv


def controllers(hosts):
    return hosts["all"]["children"]["controllers"]["hosts"]


def vip_outside(hosts, vips):
    vips["ha_vips"][0]["address"] = "198.51.100.20"  # public VIP, in the internal range


def no_interface(hosts, vips):
    del hosts["all"]["vars"]["ha_networks"]["internal"]["interface"]


def shared_address(hosts, vips):
    ctl = controllers(hosts)
    ctl["overcloud-controller-1"]["ha_addresses"]["internal"] = "198.51.100.10"


def address_outside(hosts, vips):
    controllers(hosts)["overcloud-controller-2"]["ha_addresses"]["external"] = "198.51.100.12"


def vip_twice(hosts, vips):
    vips["ha_vips"][2]["name"] = "internal_api"


def vip_on_gateway(hosts, vips):
    vips["ha_vips"][1]["address"] = "198.51.100.1"  # the lab host's own leg


def vip_unknown_network(hosts, vips):
    vips["ha_vips"][0]["network"] = "storage"


def vip_without_address(hosts, vips):
    del vips["ha_vips"][0]["address"]


def two_controllers(hosts, vips):
    del controllers(hosts)["overcloud-controller-2"]


@pytest.mark.parametrize(("change", "message"), [
    (vip_twice, "ha_vips/ha_peer_vips: internal_api declared more than once"),
    (vip_on_gateway, "ha_vips.internal_api: 198.51.100.1 must lie inside"),
    (vip_outside, "ha_vips.public: 198.51.100.20 must lie inside ha_networks.external"),
    (no_interface, "ha_networks.internal needs 'cidr'"),
    (shared_address, "ha_addresses: 198.51.100.10 is set on more than one host"),
    (address_outside, "overcloud-controller-2: ha_addresses.external (198.51.100.12)"),
    (vip_unknown_network, "ha_vips.public: 198.51.100.100 must lie inside ha_networks.storage"
                          " (no such network)"),
    (vip_without_address, "needs name, network and address"),
    (two_controllers, "pacemaker_hosts_group 'controllers' has 2 host(s): a cluster needs"),
])
def test_preflight_names_the_variable_of_a_bad_inventory(tmp_path, change, message):
    inv = crafted(tmp_path, change)
    proc = ansible("ansible-playbook", "-i", str(inv), "playbooks/preflight.yml",
                   "--tags", "preflight_data")
    assert proc.returncode != 0
    flat = " ".join(proc.stdout.split())
    assert message in flat, flat[-2000:]


needs_vagrant = pytest.mark.skipif(shutil.which("vagrant") is None,
                                   reason="vagrant comes with `make host-deps`")


@needs_vagrant
def test_vagrantfile_validates():
    proc = subprocess.run(["vagrant", "validate"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_vagrant
def test_vagrant_machines_are_the_vagrant_inventory_s_controllers():
    proc = subprocess.run(["vagrant", "status", "--machine-readable"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    machines = {line.split(",")[1] for line in proc.stdout.splitlines()
                if line.split(",")[2:3] == ["state"]}
    hosts = yaml.safe_load((ROOT / "inventory" / "vagrant" / "hosts.yml").read_text())
    assert machines == set(controllers(hosts))


def test_vagrantfile_hardcodes_no_address():
    text = (ROOT / "Vagrantfile").read_text()
    assert not re.search(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", text)


def test_vagrant_networks_are_virtualbox_host_only_ranges():
    import ipaddress
    hosts = yaml.safe_load((ROOT / "inventory" / "vagrant" / "hosts.yml").read_text())
    allowed = ipaddress.ip_network("192.168.56.0/21")
    for net in hosts["all"]["vars"]["ha_networks"].values():
        assert ipaddress.ip_network(net["cidr"]).subnet_of(allowed)


PASSWORD_FILE = "/etc/cluster/fence_password"


def fenced_example(tmp_path: Path, agent: str, shared: dict, per_host: dict | None,
                   password: str | None = None) -> Path:
    """The example inventory with fencing declared (what a user of real machines writes),
    with a password file when `password` is given."""
    inv = tmp_path / "inv"
    shutil.copytree(ROOT / "inventory" / "example", inv, symlinks=False)
    site = inv / "group_vars" / "all" / "fencing.yml"
    fencing = {"agent": agent, "options": shared}
    data: dict = {"ha_fencing": fencing}
    if password is not None:
        fencing["password_file"] = PASSWORD_FILE
        data["fencing_password"] = password
    site.write_text(yaml.safe_dump(data))
    if per_host is not None:
        hosts = yaml.safe_load((inv / "hosts.yml").read_text())
        for i, (_name, hv) in enumerate(controllers(hosts).items()):
            hv["ha_fence_options"] = {k: v.format(i=i) for k, v in per_host.items()}
        (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    return inv


IP = {"ip": "192.0.2.11{i}"}
NO_PASSWORD_FILE = "a fence password goes in fencing_password"


@pytest.mark.parametrize(("agent", "shared", "per_host", "password", "message"), [
    ("fence_ipmilan", {"username": "admin"}, IP, None, NO_PASSWORD_FILE),
    ("fence_ipmilan", {"username": "admin", "password": "x"}, IP, None, NO_PASSWORD_FILE),
    ("fence_ipmilan", {"username": "admin", "passwd": "x"}, IP, "pw", NO_PASSWORD_FILE),
    ("fence_ipmilan", {"username": "admin"}, {**IP, "password": "x"}, "pw", NO_PASSWORD_FILE),
    ("fence_ipmilan", {"username": "admin"}, None, "pw", "fence_ipmilan needs ip"),
    ("fence_virsh", {"ip": "192.168.56.1", "username": "fencer"}, None, None,
     "fence_virsh needs plug"),
])
def test_preflight_rejects_incomplete_fencing_data(tmp_path, agent, shared, per_host,
                                                   password, message):
    inv = fenced_example(tmp_path, agent, shared, per_host, password)
    proc = ansible("ansible-playbook", "-i", str(inv), "playbooks/preflight.yml",
                   "--tags", "preflight_data")
    assert proc.returncode != 0
    assert message in " ".join(proc.stdout.split())


def test_an_unknown_fence_agent_is_rejected_by_the_argument_spec(tmp_path):
    inv = fenced_example(tmp_path, "fence_nonesuch", {"ip": "x"}, None)
    proc = ansible("ansible-playbook", "-i", str(inv), "playbooks/preflight.yml",
                   "--tags", "preflight_data")
    assert proc.returncode != 0
    flat = " ".join(proc.stdout.split())
    assert "ha_fencing" in flat and "fence_nonesuch" in flat


@pytest.mark.skipif(shutil.which("pcs") is None, reason="pcs comes with `make host-deps`")
def test_ipmi_fencing_for_real_machines_builds_the_right_cib(tmp_path):
    import xml.etree.ElementTree as ET

    from ansible_collections.halab.ha.plugins.modules import pcs_cib

    from halab.cluster.declared import Declared

    inv = fenced_example(tmp_path, "fence_ipmilan", {"username": "admin", "lanplus": "1"},
                         {"ip": "192.0.2.11{i}", "pcmk_delay_base": "{i}s"}, "s3cret")
    data = Declared.load(inv, ("pacemaker_stonith", "pacemaker_constraints",
                               "pacemaker_properties"))
    hv = data.shared
    cib = tmp_path / "cib.xml"
    empty = subprocess.run(["cibadmin", "--empty"], capture_output=True, text=True,
                           check=True).stdout
    root = ET.fromstring(empty)
    for i, name in enumerate(data, start=1):
        ET.SubElement(root.find("configuration/nodes"), "node", id=str(i), uname=name)
    cib.write_text(ET.tostring(root, encoding="unicode"))
    stonith_only = {"location": [c for c in hv["pacemaker_constraints"]["location"]
                                 if c["resource"].startswith("fence-")]}
    result = pcs_cib.run({
        "properties": hv["pacemaker_properties"],
        "stonith": [{**d, "force": True} for d in hv["pacemaker_stonith"]],  # not on this host
        "constraints": stonith_only,
        "cib_file": str(cib),
    })
    assert "s3cret" not in " ".join(result["commands"]) + cib.read_text()
    conf = ET.parse(cib).getroot().find("configuration")
    devices = {p.get("id"): p for p in conf.iter("primitive")}
    assert sorted(devices) == sorted(f"fence-{n}" for n in data)
    for i, name in enumerate(data):
        dev = devices[f"fence-{name}"]
        assert (dev.get("class"), dev.get("type")) == ("stonith", "fence_ipmilan")
        attrs = {nv.get("name"): nv.get("value") for nv in dev.iter("nvpair")}
        assert attrs["ip"] == f"192.0.2.11{i}" and attrs["pcmk_host_list"] == name
        assert attrs["pcmk_delay_base"] == f"{i}s" and attrs["username"] == "admin"
        # The password stays in the root-only file the agent reads.
        assert attrs["password_script"] == f"cat {PASSWORD_FILE}"
        assert not {"password", "passwd"} & set(attrs)
    bans = {(c.get("rsc"), c.get("node"), c.get("score")) for c in conf.iter("rsc_location")}
    assert bans == {(f"fence-{n}", n, "-INFINITY") for n in data}
    props = {nv.get("name"): nv.get("value") for nv in conf.find("crm_config").iter("nvpair")}
    assert props["stonith-enabled"] == "true"


def test_the_vagrant_scenario_passes_molecule_s_syntax_check():
    proc = subprocess.run(["molecule", "syntax", "-s", "vagrant"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def test_the_vagrant_scenario_s_machines_are_the_vagrant_inventory_s():
    """Names and both addresses of each VM, as inventory/vagrant declares them."""
    scenario = yaml.safe_load((ROOT / "molecule" / "vagrant" / "molecule.yml").read_text())
    hosts = yaml.safe_load((ROOT / "inventory" / "vagrant" / "hosts.yml").read_text())
    nets = list(hosts["all"]["vars"]["ha_networks"])
    declared = {name: [h["ha_addresses"][n] for n in nets]
                for name, h in controllers(hosts).items()}
    made = {p["name"]: [i["ip"] for i in p["interfaces"]] for p in scenario["platforms"]}
    assert made == declared
    assert scenario["driver"]["name"] == "vagrant"
    assert scenario["verifier"]["env"]["HALAB_INVENTORY"].endswith("/inventory/vagrant")


def test_nothing_of_vagrant_s_state_is_committed():
    assert ".vagrant/" in (ROOT / ".gitignore").read_text().splitlines()
    files = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT,
                           check=True).stdout.splitlines()
    assert not [f for f in files if f.startswith(".vagrant/") or "/.vagrant/" in f]
