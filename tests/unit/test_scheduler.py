"""The scheduler tier: the CIB that the inventory declares, built offline with the
pcs_cib module (pcs -f) and replayed with crm_simulate. No nodes needed."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest
from ansible_collections.halab.ha.plugins.modules import pcs_cib

from halab.cluster import crm
from halab.cluster.declared import Declared

ROOT = Path(__file__).resolve().parents[2]
CONTROLLERS = ["overcloud-controller-0", "overcloud-controller-1", "overcloud-controller-2"]
SPARE = "overcloud-controller-3"  # a node without any role attribute

pytestmark = pytest.mark.skipif(
    shutil.which("pcs") is None or shutil.which("crm_simulate") is None,
    reason="pcs and crm_simulate come with `make host-deps`",
)


@pytest.fixture(scope="module")
def data():
    return Declared.load(ROOT / "inventory" / "lab")


@pytest.fixture(scope="module")
def cib(tmp_path_factory, data) -> Path:
    """The declared CIB on four nodes: the three controllers and a spare without roles."""
    path = tmp_path_factory.mktemp("sched") / "cib.xml"
    empty = subprocess.run(["cibadmin", "--empty"], capture_output=True, text=True,
                           check=True).stdout
    root = ET.fromstring(empty.replace("<cib ", '<cib have-quorum="1" ', 1))
    nodes = root.find("configuration/nodes")
    for i, name in enumerate([*CONTROLLERS, SPARE], start=1):
        ET.SubElement(nodes, "node", id=str(i), uname=name)
    path.write_text(ET.tostring(root, encoding="unicode"))
    hv = data[CONTROLLERS[0]]
    resources = []
    for rsc in hv["pacemaker_resources"]:
        # The lab's own agent (roles/pacemaker) is installed on the nodes only: --force.
        node_only = rsc["agent"].startswith("ocf:halab:")
        resources.append({**rsc, "force": True} if node_only else rsc)
    params = {
        "properties": hv["pacemaker_properties"],
        "resource_defaults": hv["pacemaker_resource_defaults"],
        "op_defaults": hv.get("pacemaker_op_defaults", {}),
        "node_attributes": {h: data[h]["pacemaker_node_attributes"] for h in CONTROLLERS},
        "resources": resources,
        "groups": hv.get("pacemaker_groups", []),
        # fence_halab exists on the nodes only: pcs needs --force here too.
        "stonith": [{**d, "force": True} for d in hv.get("pacemaker_stonith", [])],
        "constraints": hv["pacemaker_constraints"],
        "cib_file": str(path),
    }
    assert pcs_cib.run(params)["changed"]
    assert not pcs_cib.run(params)["changed"], "the declared CIB converges in one pass"
    return path


def simulate(cib: Path, out: Path, *args: str) -> dict[str, list[str]]:
    """Run crm_simulate; return resource (or clone) id -> nodes where it ends up active
    (and the planned transition's text under the key "transition")."""
    proc = subprocess.run(["crm_simulate", "--xml-file", str(cib), "--simulate",
                           "--save-output", str(out), *args],
                          check=True, capture_output=True, text=True, timeout=120)
    mon = subprocess.run(["crm_mon", "--one-shot", "--output-as=xml"], check=True,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CIB_file": str(out)}).stdout
    placed = defaultdict(list, crm.state(mon)["started"])
    placed["transition"] = proc.stdout
    return placed


def promotion_scores(path: Path, data) -> None:
    """The master-<primitive> scores the galera and redis agents set on running nodes
    (crm_master), which the scheduler needs before it promotes anything."""
    env = {**os.environ, "CIB_file": str(path)}
    for rsc in data[CONTROLLERS[0]]["pacemaker_resources"]:
        if rsc.get("promotable"):
            for node in CONTROLLERS:
                subprocess.run(["crm_attribute", "--node", node, "--lifetime", "reboot",
                                "--name", f"master-{rsc['id']}", "--update", "100"],
                               check=True, capture_output=True, env=env, timeout=60)


@pytest.fixture(scope="module")
def started(cib, tmp_path_factory) -> tuple[Path, dict]:
    """Every node up, before any agent has set a promotion score."""
    out = tmp_path_factory.mktemp("started") / "started.xml"
    up = [a for n in [*CONTROLLERS, SPARE] for a in ("--node-up", n)]
    return out, simulate(cib, out, *up)


@pytest.fixture(scope="module")
def steady(started, data, tmp_path_factory) -> tuple[Path, dict]:
    """Then the agents' promotion scores, and the transition that follows."""
    path, _ = started
    promotion_scores(path, data)
    out = tmp_path_factory.mktemp("steady") / "steady.xml"
    return out, simulate(path, out)


def test_keystone_waits_for_its_nodes_galera_promotion(started, steady):
    _, before = started
    _, after = steady
    assert before["galera-master"] and not before["openstack-keystone-clone"]
    assert sorted(after["openstack-keystone-clone"]) == CONTROLLERS


def vip_ids(data) -> list[str]:
    return [data.vip_resource(name) for name in data.vips()]


def test_clones_run_on_every_controller_and_never_on_a_node_without_the_role(steady, data):
    _, placed = steady
    for rsc in data[CONTROLLERS[0]]["pacemaker_resources"]:
        if rsc.get("clone"):
            assert sorted(placed[rsc["clone"]["id"]]) == CONTROLLERS, rsc["id"]


def test_a_fresh_placement_spreads_the_vips_one_per_controller(steady, data):
    _, placed = steady
    owners = [placed[v][0] for v in vip_ids(data)]
    assert all(len(placed[v]) == 1 for v in vip_ids(data))
    assert SPARE not in owners
    assert len(set(owners)) == min(len(owners), len(CONTROLLERS))


def test_a_failed_controller_s_vips_move_to_the_survivors(steady, data, tmp_path):
    state, placed = steady
    victim = placed[vip_ids(data)[0]][0]
    after = simulate(state, tmp_path / "failed.xml", "--node-fail", victim)
    survivors = sorted(set(CONTROLLERS) - {victim})
    for vip in vip_ids(data):
        assert len(after[vip]) == 1 and after[vip][0] in survivors, vip
    assert sorted(after["haproxy-clone"]) == survivors
    # Fence devices may run anywhere but on their target; services never on the spare.
    services = (v for k, v in after.items() if k != "transition" and not k.startswith("fence-"))
    assert SPARE not in sum(services, [])
    if data[CONTROLLERS[0]].get("ha_fencing"):
        # With fencing, the lost node is fenced before anything moves off it.
        assert f"Fence (reboot) {victim}" in after["transition"]


def test_every_controller_has_a_fence_device_that_never_runs_on_itself(steady, data):
    hv = data[CONTROLLERS[0]]
    if not hv.get("ha_fencing"):
        pytest.skip("this inventory declares no fencing")
    _, placed = steady
    for node in CONTROLLERS:
        device = f"fence-{node}"
        assert len(placed[device]) == 1 and placed[device][0] != node, device
    assert hv["pacemaker_properties"]["stonith-enabled"] == "true"


def graph_after(state: Path, tmp_path: Path, node: str, attribute: list[str]) -> str:
    """The transition graph (dot) once `node` gets a node attribute (crm_attribute
    arguments after --node), on a copy of `state`."""
    changed = tmp_path / f"{attribute[1]}.xml"
    shutil.copy(state, changed)
    subprocess.run(["crm_attribute", "--node", node, *attribute], check=True,
                   capture_output=True, timeout=60, env={**os.environ, "CIB_file": str(changed)})
    dot = tmp_path / f"{attribute[1]}.dot"
    subprocess.run(["crm_simulate", "--xml-file", str(changed), "--simulate",
                    "--save-dotfile", str(dot)], check=True, capture_output=True, timeout=120)
    return dot.read_text()


def inputs_of(graph: str, action: str) -> list[str]:
    """The actions the graph orders before `action`."""
    return [line.split(" -> ")[0].strip().strip('"') for line in graph.splitlines()
            if f' -> "{action}"' in line]


def test_a_stopping_node_s_vip_leaves_without_waiting_for_its_haproxy(steady, data, tmp_path):
    """Standby of the public VIP's owner: in the transition graph nothing leads from
    the HAProxy clone's stop to the VIP's stop (the VIP order applies to starts only)."""
    state, placed = steady
    vip = vip_ids(data)[0]
    victim = placed[vip][0]
    graph = graph_after(state, tmp_path, victim, ["--name", "standby", "--update", "on"])
    assert f'"{vip}_stop_0 {victim}"' in graph and f'"haproxy_stop_0 {victim}"' in graph
    into_vip_stop = inputs_of(graph, f"{vip}_stop_0 {victim}")
    assert not [a for a in into_vip_stop if "haproxy" in a], into_vip_stop


def test_a_stopping_node_s_services_leave_before_its_vip_haproxy_and_galera(
        steady, data, tmp_path):
    """Shutdown of the internal VIP's owner (pcs cluster stop): each OpenStack service
    stops before the VIP and HAProxy it reaches its database through, and before its
    Galera demotes."""
    state, placed = steady
    vip = data.vip_resource("internal_api")
    victim = placed[vip][0]
    graph = graph_after(state, tmp_path, victim,
                        ["--name", "shutdown", "--lifetime", "reboot", "--update", "1"])
    services = [(r["id"], r["clone"]["id"]) for r in data[CONTROLLERS[0]]["pacemaker_resources"]
                if r["id"].startswith("openstack-")]
    assert services
    for then in (f"{vip}_stop_0 {victim}", f"haproxy_stop_0 {victim}",
                 f"galera_demote_0 {victim}"):
        inputs = inputs_of(graph, then)
        # A clone's instance stop, or for the VIP (not a clone) the clone's "stopped"
        missing = [s for s, clone in services
                   if f"{s}_stop_0 {victim}" not in inputs and f"{clone}_stopped_0" not in inputs]
        assert not missing, (then, missing)


def test_a_survivor_without_quorum_stops_everything(steady, tmp_path):
    """The stop orders are Optional: the stops the survivor cannot run on the two lost
    (unfenceable) nodes hold none of its own."""
    state, placed = steady
    survivor, *lost = CONTROLLERS
    after = simulate(state, tmp_path / "noquorum.xml", "--quorum", "false",
                     *[a for n in lost for a in ("--node-down", n)])
    still = sorted(k for k, where in after.items() if k != "transition" and survivor in where)
    assert not still, still
