"""pcs_cib against real pcs/crm_diff/cibadmin on CIB files (no cluster needed)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_collections.halab.ha.plugins.modules import pcs_cib
from ansible_collections.halab.ha.plugins.modules.pcs_cib import CibError, run

pytestmark = pytest.mark.skipif(shutil.which("pcs") is None, reason="pcs is not installed")

MODULE = Path(pcs_cib.__file__)
NODES = [f"overcloud-controller-{i}" for i in range(3)]
VIP = "ip-203.0.113.100"
SECRET = "S3cret-fence-pw"

FULL: dict[str, Any] = {
    "properties": {"stonith-enabled": False, "no-quorum-policy": "stop"},
    "resource_defaults": {"resource-stickiness": "INFINITY"},
    "op_defaults": {"timeout": "120s"},
    "node_attributes": {n: {"haproxy-role": True} for n in NODES},
    "resources": [
        {
            "id": VIP,
            "agent": "ocf:heartbeat:IPaddr2",
            "options": {"ip": "203.0.113.100", "cidr_netmask": 32, "nic": "ext0"},
            "meta": {"resource-stickiness": "INFINITY"},
            "ops": [{"action": "monitor", "interval": "10s", "timeout": "20s"}],
        },
        {
            # No haproxy unit on a test host: --force skips the metadata lookup.
            "id": "haproxy",
            "agent": "systemd:haproxy",
            "force": True,
            "clone": {"id": "haproxy-clone", "meta": {"interleave": True}},
        },
        {
            "id": "redis",
            "agent": "ocf:heartbeat:redis",
            "options": {"wait_last_known_master": True},
            "promotable": {
                "id": "redis-master",
                "meta": {"promoted-max": 1, "notify": True, "ordered": True, "interleave": True},
            },
        },
    ],
    "stonith": [
        {
            "id": "fence-n0",
            "agent": "fence_xyz",
            "force": True,
            "options": {"ip": "192.0.2.10", "username": "admin", "password": SECRET},
        }
    ],
    "constraints": {
        "location": [
            {
                "resource": "haproxy-clone",
                "rule": "haproxy-role eq true",
                "score": "0",
                "resource_discovery": "exclusive",
                "id": "loc-haproxy",
            },
            {"resource": "fence-n0", "node": "overcloud-controller-0", "score": "-INFINITY"},
        ],
        "colocation": [
            {
                "resource": VIP,
                "with": "haproxy-clone",
                "score": "INFINITY",
                "id": "col-vip-haproxy",
            },
            {"resource": VIP, "with": "redis-master", "with_role": "Promoted"},
        ],
        "order": [
            {"first": VIP, "then": "haproxy-clone", "kind": "Optional", "id": "ord-vip-haproxy"},
            {
                "first": "redis-master",
                "first_action": "promote",
                "then": VIP,
                "then_action": "start",
            },
        ],
    },
}


def data(**overrides: Any) -> dict[str, Any]:
    d = copy.deepcopy(FULL)
    d.update(overrides)
    return d


def make_cib(path: Path) -> Path:
    text = subprocess.run(
        ["cibadmin", "--empty"], capture_output=True, text=True, check=True
    ).stdout
    root = ET.fromstring(text)
    root.set("have-quorum", "1")  # else crm_simulate blocks every start on "no quorum"
    conf = root.find("configuration")
    cps = ET.SubElement(conf.find("crm_config"), "cluster_property_set", id="cib-bootstrap-options")
    ET.SubElement(
        cps,
        "nvpair",
        id="cib-bootstrap-options-dc-version",
        name="dc-version",
        value="2.1.5-a3f44794f94",
    )
    for i, name in enumerate(NODES, start=1):
        ET.SubElement(conf.find("nodes"), "node", id=str(i), uname=name)
    path.write_text(ET.tostring(root, encoding="unicode"))
    return path


def load(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def nvpairs(root: ET.Element, xpath: str) -> dict[str, str]:
    return {nv.get("name"): nv.get("value") for nv in root.iterfind(xpath)}


def ids(root: ET.Element, section: str) -> list[str]:
    return [el.get("id") for el in root.find(f"configuration/{section}")]


def converge(path: Path, d: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return run({**d, "cib_file": str(path)}, **kw)


def pcs_f(path: Path, *args: str) -> None:
    subprocess.run(["pcs", "-f", str(path), *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = make_cib(tmp_path_factory.mktemp("converged") / "cib.xml")
    return path, converge(path, data())


@pytest.fixture(scope="module")
def operated(converged, tmp_path_factory) -> Path:
    """The converged CIB after an operator's ban/standby commands."""
    path = tmp_path_factory.mktemp("operated") / "cib.xml"
    shutil.copy(converged[0], path)
    pcs_f(path, "resource", "ban", VIP, "overcloud-controller-2")
    pcs_f(path, "resource", "ban", "redis-master", "overcloud-controller-1")
    pcs_f(path, "node", "standby", "overcloud-controller-1")
    return path


# ---------------------------------------------------------------- converge


def test_first_converge_creates_declared_objects(converged):
    path, result = converged
    assert result["changed"] is True
    root = load(path)
    props = nvpairs(root, "configuration/crm_config/cluster_property_set/nvpair")
    assert props == {
        "dc-version": "2.1.5-a3f44794f94",
        "stonith-enabled": "false",
        "no-quorum-policy": "stop",
    }
    assert ids(root, "resources") == ["fence-n0", VIP, "haproxy-clone", "redis-master"]
    clone = root.find("configuration/resources/clone[@id='haproxy-clone']")
    assert clone.find("primitive").get("id") == "haproxy"
    assert nvpairs(clone, "meta_attributes/nvpair") == {"interleave": "true"}
    redis = root.find("configuration/resources/clone[@id='redis-master']")
    assert nvpairs(redis, "meta_attributes/nvpair") == {
        "interleave": "true",
        "notify": "true",
        "ordered": "true",
        "promotable": "true",
        "promoted-max": "1",
    }
    vip = root.find(f"configuration/resources/primitive[@id='{VIP}']")
    assert nvpairs(vip, "instance_attributes/nvpair")["cidr_netmask"] == "32"
    assert vip.find("operations/op[@name='monitor']").get("interval") == "10s"
    assert ids(root, "constraints") == [
        "loc-haproxy",
        "location-fence-n0-overcloud-controller-0--INFINITY",
        "col-vip-haproxy",
        f"colocation-{VIP}-redis-master-INFINITY",
        "ord-vip-haproxy",
        f"order-redis-master-{VIP}-mandatory",
    ]
    loc = root.find("configuration/constraints/rsc_location[@id='loc-haproxy']")
    assert loc.get("resource-discovery") == "exclusive"
    assert loc.find("rule").get("score") == "0"
    assert loc.find("rule/expression").attrib == {
        "id": "loc-haproxy-rule-expr",
        "operation": "eq",
        "attribute": "haproxy-role",
        "value": "true",
    }
    col = root.find("configuration/constraints/rsc_colocation[@with-rsc='redis-master']")
    assert col.get("with-rsc-role") == "Promoted"
    order = root.find(f"configuration/constraints/rsc_order[@then='{VIP}']")
    assert (order.get("first-action"), order.get("then-action")) == ("promote", "start")
    assert nvpairs(root, "configuration/rsc_defaults/meta_attributes/nvpair") == {
        "resource-stickiness": "INFINITY"
    }
    assert nvpairs(root, "configuration/op_defaults/meta_attributes/nvpair") == {"timeout": "120s"}
    for node in root.iterfind("configuration/nodes/node"):
        assert nvpairs(node, "instance_attributes/nvpair") == {"haproxy-role": "true"}


def test_commands_mask_secrets(converged):
    _, result = converged
    joined = "\n".join(result["commands"])
    assert SECRET not in joined
    assert "password=********" in joined
    assert "--force -- resource create haproxy systemd:haproxy" in joined


def test_second_converge_is_a_noop_despite_operator_changes(operated):
    before = operated.read_bytes()
    result = converge(operated, data(), want_diff=True)
    assert result["changed"] is False
    assert result["warnings"] == []
    assert result["diff"]["before"] == result["diff"]["after"]
    assert SECRET not in result["diff"]["after"]
    assert 'name="password" value="********"' in result["diff"]["after"]
    assert "epoch" not in result["diff"]["before"]
    assert operated.read_bytes() == before


@pytest.fixture(scope="module")
def removed(operated, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("removed") / "cib.xml"
    shutil.copy(operated, path)
    d = data()
    d["resources"] = [r for r in d["resources"] if r["id"] != "redis"]
    d["constraints"]["colocation"].pop()
    d["constraints"]["order"].pop()
    return path, converge(path, d)


def test_removing_a_resource_removes_it_and_its_constraints(removed):
    path, result = removed
    assert result["changed"] is True
    root = load(path)
    assert ids(root, "resources") == ["fence-n0", VIP, "haproxy-clone"]
    assert not [c for c in ids(root, "constraints") if "redis" in c]
    # The operator's ban of the removed resource cannot stay (dangling reference).
    assert result["warnings"] == [
        "dropping constraint cli-ban-redis-master-on-overcloud-controller-1: "
        "resource(s) redis-master no longer declared"
    ]


def test_operator_state_survives(removed):
    root = load(removed[0])
    assert ids(root, "constraints")[-1] == f"cli-ban-{VIP}-on-overcloud-controller-2"
    node1 = root.find("configuration/nodes/node[@uname='overcloud-controller-1']")
    assert nvpairs(node1, "instance_attributes/nvpair") == {"haproxy-role": "true", "standby": "on"}
    props = nvpairs(root, "configuration/crm_config/cluster_property_set/nvpair")
    assert props["dc-version"] == "2.1.5-a3f44794f94"


def test_an_empty_declaration_does_not_empty_the_cluster(converged, tmp_path):
    path = tmp_path / "cib.xml"
    shutil.copy(converged[0], path)
    before = path.read_bytes()
    empty = {**data(), "resources": [], "groups": [], "stonith": [], "constraints": {}}
    with pytest.raises(CibError, match=r"would delete all 4 in the live CIB .*remove_all"):
        converge(path, empty)
    assert path.read_bytes() == before
    assert converge(path, {**empty, "remove_all": True})["changed"] is True
    assert ids(load(path), "resources") == []


def test_check_mode_reports_change_without_writing(tmp_path):
    path = make_cib(tmp_path / "cib.xml")
    before = path.read_bytes()
    result = converge(
        path, {"properties": {"maintenance-mode": True}}, check_mode=True, want_diff=True
    )
    assert result["changed"] is True
    assert path.read_bytes() == before
    assert 'name="maintenance-mode" value="true"' in result["diff"]["after"]
    assert "maintenance-mode" not in result["diff"]["before"]


def test_empty_value_removes_property_and_node_attribute(tmp_path):
    path = make_cib(tmp_path / "cib.xml")

    def declare(value: Any) -> dict[str, Any]:
        return {
            "properties": {"maintenance-mode": value},
            "node_attributes": {NODES[0]: {"rack": value}},
        }

    assert converge(path, declare(True))["changed"]
    assert converge(path, declare(""))["changed"]
    text = path.read_text()
    assert "maintenance-mode" not in text and "rack" not in text
    # Absent already: no pcs call at all.
    result = converge(path, declare(""))
    assert (result["changed"], result["commands"]) == (False, [])


def test_groups_cloned_group_and_idempotence(tmp_path):
    path = make_cib(tmp_path / "cib.xml")
    d = {
        "no_default_ops": True,
        "resources": [
            {"id": "a", "agent": "ocf:pacemaker:Dummy"},
            {"id": "b", "agent": "ocf:pacemaker:Dummy"},
        ],
        "groups": [
            {
                "id": "g1",
                "resources": ["b", "a"],
                "meta": {"target-role": "Started"},
                "clone": {"id": "g1-clone", "meta": {"interleave": True}},
            }
        ],
        "constraints": {
            "location": [{"resource": "g1-clone", "node": NODES[0], "score": 100, "id": "loc-g1"}]
        },
    }
    assert converge(path, d)["changed"] is True
    root = load(path)
    group = root.find("configuration/resources/clone[@id='g1-clone']/group[@id='g1']")
    assert [p.get("id") for p in group.iterfind("primitive")] == ["b", "a"]
    assert nvpairs(group, "meta_attributes/nvpair") == {"target-role": "Started"}
    # --no-default-ops: only pcs's monitor op, none from the agent metadata.
    assert [op.get("name") for op in group.iterfind("primitive/operations/op")] == [
        "monitor",
        "monitor",
    ]
    assert root.find("configuration/constraints/rsc_location").get("score") == "100"
    assert converge(path, d)["changed"] is False


def test_created_stopped_waits_for_its_enable_and_stays_converged(tmp_path):
    """A resource whose prerequisites come later is created Stopped; once it exists the
    converge keeps the cluster's target-role, so enabling it is not undone."""
    path = make_cib(tmp_path / "cib.xml")
    d = {"no_default_ops": True, "created_stopped": ["api-clone"],
         "resources": [{"id": "api", "agent": "ocf:pacemaker:Dummy", "clone": {"id": "api-clone"}},
                       {"id": "db", "agent": "ocf:pacemaker:Dummy"}]}

    def target_roles() -> dict[str, str]:
        root = load(path)
        return {el.get("id"): nvpairs(el, "meta_attributes/nvpair").get("target-role", "")
                for el in root.iterfind("configuration/resources//*[@id]")
                if el.tag in ("primitive", "clone")}

    assert converge(path, d)["changed"] is True
    assert target_roles() == {"api-clone": "", "api": "Stopped", "db": ""}
    assert converge(path, d)["changed"] is False
    pcs_f(path, "resource", "enable", "api-clone")
    assert set(target_roles().values()) <= {"", "Started"}
    assert converge(path, d)["changed"] is False
    assert set(target_roles().values()) <= {"", "Started"}
    # An operator's disable of the primitive is kept too, until its role starts it.
    pcs_f(path, "resource", "disable", "api")
    assert converge(path, d)["changed"] is False
    assert "Stopped" in target_roles().values()


def test_crm_simulate_places_resources(converged, tmp_path):
    path = tmp_path / "sim.xml"
    shutil.copy(converged[0], path)
    # The redis agent publishes promotion scores at runtime; a simulation must inject one.
    subprocess.run(
        [
            "crm_attribute",
            "--node",
            NODES[1],
            "--name",
            "master-redis",
            "--update",
            "10",
            "--lifetime",
            "forever",
        ],
        env=dict(os.environ, CIB_file=str(path)),
        check=True,
        capture_output=True,
    )
    cmd = ["crm_simulate", "--xml-file", str(path), "--simulate", "--output-as=xml"]
    for node in NODES:
        cmd += ["--node-up", node]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    status = ET.fromstring(out).find("revised_cluster_status/resources")

    def placed(xpath: str) -> list[str]:
        return sorted(
            n.get("name")
            for r in status.iterfind(xpath)
            if r.get("role") != "Stopped"
            for n in r.iterfind("node")
        )

    assert placed("clone[@id='haproxy-clone']/resource") == NODES
    assert placed(f"resource[@id='{VIP}']") == [NODES[1]]  # exactly one: the promoted redis
    promoted = [
        n.get("name")
        for r in status.iterfind("clone[@id='redis-master']/resource")
        if r.get("role") == "Promoted"
        for n in r.iterfind("node")
    ]
    assert promoted == [NODES[1]]
    assert NODES[0] not in placed("resource[@id='fence-n0']")


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"resources": [{"id": "x", "agent": "ocf:pacemaker:Dummy", "clones": {}}]},
            "resources[0] (id=x): unknown key(s) clones",
        ),
        (
            {"resources": [{"agent": "ocf:pacemaker:Dummy"}]},
            "resources[0]: missing required arguments: id",
        ),
        ({"resources": [{"id": "x"}]}, "resources[0] (id=x): missing required arguments: agent"),
        ({"resources": ["x"]}, "resources[0]: must be a mapping"),
        (
            {"resources": [{"id": " ", "agent": "ocf:pacemaker:Dummy"}]},
            "resources[0] (id= ): 'id' must not be empty",
        ),
        (
            {"resources": [{"id": "x", "agent": "ocf:pacemaker:Dummy", "clone": {},
                            "promotable": {}}]},
            "resources[0] (id=x): parameters are mutually exclusive: clone|promotable",
        ),
        (
            {"resources": [{"id": "x", "agent": "ocf:pacemaker:Dummy", "clone": {"ids": "y"}}]},
            "resources[0] (id=x).clone: unknown key(s) ids",
        ),
        (
            {"resources": [{"id": "x", "agent": "ocf:pacemaker:Dummy", "ops": [{"timeout": 5}]}]},
            "resources[0] (id=x).ops[0]: missing 'action'",
        ),
        (
            {"resources": [{"id": "x", "agent": "ocf:pacemaker:Dummy", "meta": {"a": [1]}}]},
            "resources[0] (id=x).meta: 'a' must be a string, number or boolean",
        ),
        ({"node_attributes": {"n": "a=b c"}}, "node_attributes[n]: must be a mapping"),
        ({"fence": []}, "options: unknown key(s) fence"),
        (
            {"stonith": [{"id": "f", "agent": "fence_x", "options": {"password": None}}]},
            "stonith[0] (id=f).options: 'password' must be a string",
        ),
        (
            {"constraints": {"order": [{"first": "x", "then": "nope"}]}},
            "constraints.order[0] (first=x): 'then' names undeclared resource 'nope'",
        ),
        (
            {"constraints": {"colocation": [{"resource": "x", "with": "x-clone", "score": 1}]}},
            "constraints.colocation[0] (resource=x): 'resource' names 'x' which is cloned",
        ),
        (
            {"constraints": {"location": [{"resource": "x-clone"}]}},
            "constraints.location[0] (resource=x-clone): one of the following is required: "
            "node, rule",
        ),
        (
            {"constraints": {"location": [{"resource": "x-clone", "node": "n", "rule": "a"}]}},
            "constraints.location[0] (resource=x-clone): parameters are mutually exclusive: "
            "node|rule",
        ),
        (
            {"constraints": {"location": [{"resource": "x-clone", "node": "n",
                                           "role": "Promoted"}]}},
            "constraints.location[0] (resource=x-clone): missing parameter(s) required by "
            "'role': rule",
        ),
        (
            {"constraints": {"location": [{"resource": "x-clone", "rule": "a eq 'b"}]}},
            "constraints.location[0] (resource=x-clone): cannot parse rule",
        ),
        (
            {"constraints": {"order": [{"first": "x-clone", "then": "x-clone",
                                        "symmetrical": "maybe"}]}},
            "constraints.order[0] (first=x-clone): argument 'symmetrical' is of type str and "
            "we were unable to convert to bool",
        ),
        (
            {"constraints": {"location": [{"resource": "x-clone", "node": "n", "id": "cli-x"}]}},
            "ids starting with 'cli-' are reserved",
        ),
        ({"groups": [{"id": "g", "resources": ["x"]}]}, "groups[0] (id=g): member 'x' is cloned"),
        ({"groups": [{"id": "g", "resources": []}]}, "groups[0] (id=g): 'resources' must list"),
        ({"groups": [{"id": "g"}]}, "groups[0] (id=g): missing required arguments: resources"),
        (
            {"groups": [{"id": "g", "resources": ["y"]}, {"id": "h", "resources": ["y"]}],
             "resources": [{"id": "y", "agent": "ocf:pacemaker:Dummy"}]},
            "groups[1] (id=h): member 'y' is already in group 'g'",
        ),
        ({"groups": [{"id": "g", "resources": ["z"]}]}, "member 'z' is not a declared resource"),
        (
            {"groups": [{"id": "x-clone", "resources": []}]},
            "id 'x-clone' already used by resources[0] (id=x)",
        ),
        (
            {"constraints": {"order": [{"first": "x-clone", "then": "x-clone", "kind": "Maybe"}]}},
            "constraints.order[0] (first=x-clone): value of kind must be one of: Optional, "
            "Mandatory, Serialize, got: Maybe",
        ),
        ({"created_stopped": ["x-clone", "nope"]},
         "created_stopped[1]: 'nope' is not a declared resource or its clone"),
        (
            {"constraints": {"ticket": []}},
            "constraints: unknown key(s) ticket; allowed: colocation, location, order",
        ),
    ],
)
def test_validation_names_the_entry_before_touching_the_cib(tmp_path, change, expected):
    d = {"resources": [{"id": "x", "agent": "ocf:pacemaker:Dummy", "clone": {}}]}
    d.update(change)
    # A missing CIB proves validation runs before anything reads or runs pcs.
    with pytest.raises(CibError) as err:
        run({**d, "cib_file": str(tmp_path / "missing.xml")})
    assert expected in str(err.value)


def test_unknown_node_for_attributes(tmp_path):
    path = make_cib(tmp_path / "cib.xml")
    with pytest.raises(CibError, match="node_attributes: node.s. ghost not in the CIB"):
        converge(path, {"node_attributes": {"ghost": {"a": "b"}}})


# ---------------------------------------------------------------- secrets


def test_pcs_failure_masks_secrets(tmp_path):
    path = make_cib(tmp_path / "cib.xml")
    before = path.read_bytes()
    d = {
        "stonith": [
            {
                "id": "f1",
                "agent": "fence_not_installed",
                "options": {"ip": "192.0.2.1", "password": SECRET, "api_token": "tok-123"},
            }
        ]
    }
    with pytest.raises(CibError) as err:
        converge(path, d)
    msg = str(err.value)
    assert "stonith create f1 fence_not_installed ip=192.0.2.1 'password=********'" in msg
    assert "'api_token=********'" in msg
    assert "is not installed" in msg  # pcs's own stderr is reported
    assert SECRET not in msg and "tok-123" not in msg
    assert path.read_bytes() == before


def test_mask_helpers():
    assert pcs_cib.mask_args(["ip=1", "Passwd=x", "ssh_key=y", "a"]) == [
        "ip=1",
        "Passwd=********",
        "ssh_key=********",
        "a",
    ]
    secrets = pcs_cib.secret_values(
        {
            "stonith": [{"options": {"password": "pw1", "use_key": True}}],
            "ops": [("monitor", {"token": "t0k"})],
        }
    )
    assert secrets == {"pw1", "t0k"}  # booleans would garble every "true" in the output
    assert pcs_cib.scrub("bad value 'pw1' for t0k", secrets) == "bad value '********' for ********"


# ---------------------------------------------------------------- module entry point


def test_module_entry_point_masks_invocation(tmp_path):
    path = make_cib(tmp_path / "cib.xml")
    args = {
        "cib_file": str(path),
        "properties": {"no-quorum-policy": "stop"},
        "stonith": [
            {"id": "f1", "agent": "fence_xyz", "force": True, "options": {"password": SECRET}}
        ],
        "_ansible_diff": True,
    }
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, check=False
    )
    assert SECRET not in proc.stdout
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, result
    assert result["changed"] is True
    assert "fence_xyz" not in result["diff"]["before"]
    assert "fence_xyz" in result["diff"]["after"]
    assert "f1" in [el.get("id") for el in load(path).iter("primitive")]


def test_module_entry_point_checks_the_nested_shape(tmp_path):
    path = make_cib(tmp_path / "cib.xml")
    before = path.read_bytes()
    args = {
        "cib_file": str(path),
        "resources": [{"id": "x", "agent": "ocf:pacemaker:Dummy", "clone": {}, "promotable": {}}],
        "stonith": [{"id": "f", "agent": "fence_xyz", "options": {"password": SECRET}}],
    }
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, check=False
    )
    result = json.loads(proc.stdout)
    assert result["failed"] is True
    # AnsibleModule's own check, before the module's code runs.
    assert "parameters are mutually exclusive: clone|promotable" in result["msg"]
    assert SECRET not in proc.stdout  # the failure returns the arguments
    assert path.read_bytes() == before


def test_ansible_adhoc_check_mode(tmp_path):
    path = make_cib(tmp_path / "cib.xml")
    before = path.read_bytes()
    env = dict(
        os.environ,
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_NOCOLOR="1",
    )
    env.pop("ANSIBLE_CONFIG", None)
    args = json.dumps({"cib_file": str(path), "properties": {"no-quorum-policy": "stop"}})
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible")),
            "localhost",
            "-c",
            "local",
            "-M",
            str(MODULE.parent),
            "-m",
            "pcs_cib",
            "-a",
            args,
            "--check",
            "--diff",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CHANGED" in proc.stdout
    assert '+        <nvpair id="cib-bootstrap-options-no-quorum-policy"' in proc.stdout
    assert path.read_bytes() == before


# ---------------------------------------------------------------- docs


def assert_documented(options: dict[str, Any], spec: dict[str, Any], path: str = "") -> None:
    assert set(options) == set(spec), path
    for name, s in spec.items():
        doc, where = options[name], f"{path}{name}"
        for key, unset in (("type", None), ("elements", None), ("required", False),
                           ("default", None), ("choices", None)):
            assert doc.get(key, unset) == s.get(key, unset), f"{where}: {key}"
        if "options" in s:
            assert_documented(doc["suboptions"], s["options"], f"{where}.")
        else:
            assert "suboptions" not in doc, where


def test_documentation_matches_argument_spec():
    doc = yaml.safe_load(pcs_cib.DOCUMENTATION)
    assert_documented(doc["options"], pcs_cib.ARGUMENT_SPEC)
    examples = yaml.safe_load(pcs_cib.EXAMPLES)
    task = examples[0]["pcs_cib"]
    pcs_cib.validate(task)  # the documented example is valid data
    yaml.safe_load(pcs_cib.RETURN)


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["resources"][0].update(ops=[{"action": "clone"}]),
     r"resources\[0\] \(id=ip-203.0.113.100\)\.ops\[0\]: unknown action 'clone'"),
    (lambda d: d.update(groups=[{"id": "g", "resources": [["haproxy"]]}]),
     # Ansible's str conversion makes it "['haproxy']", which names nothing declared.
     r"groups\[0\] \(id=g\): member \"\['haproxy'\]\" is not a declared resource"),
])
def test_words_pcs_would_misread_are_refused(tmp_path, change, expected):
    path = make_cib(tmp_path / "cib.xml")
    before = path.read_bytes()
    d = data()
    change(d)
    with pytest.raises(CibError, match=expected):
        converge(path, d)
    assert path.read_bytes() == before
