"""Fixtures for the testinfra suite that molecule's verify runs against the lab.

Per-host tests use testinfra's `host` fixture (`--hosts=ansible://controllers`).
Cluster-wide tests use `nodes` (every controller by name) and `inventory` (the
declared data, templated by Ansible)."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import testinfra
import yaml

from halab.declared import declared

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = os.environ.get("HALAB_INVENTORY", str(ROOT / "inventory" / "lab"))


@pytest.fixture(scope="session")
def inventory() -> dict:
    """Each controller's cluster variables, templated as the playbooks see them."""
    return declared(INVENTORY)


@pytest.fixture(scope="session")
def nodes(inventory) -> dict:
    return {
        name: testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")
        for name in inventory
    }


@pytest.fixture(scope="session")
def any_node(nodes):
    return next(iter(nodes.values()))


def setting(hostvars: dict, role: str, name: str):
    """A role variable as the play sees it: the inventory's value, else the role default."""
    if name in hostvars:
        return hostvars[name]
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    return defaults[name]


def crm_mon(node) -> ET.Element:
    return ET.fromstring(node.check_output("crm_mon --one-shot --output-as=xml"))


def wait_for(condition, timeout: float, interval: float = 1.0, what: str = "condition"):
    """Poll `condition` until it returns a truthy value; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def cluster_state(node) -> dict:
    """crm_mon reduced to what the health gate and the tests look at."""
    mon = crm_mon(node)
    dc = mon.find("summary/current_dc")
    state = {
        "quorum": dc is not None and dc.get("with_quorum") == "true",
        "online": {n.get("name") for n in mon.iter("node")
                   if n.get("online") == "true" and n.get("standby") != "true"},
        "standby": {n.get("name") for n in mon.iter("node") if n.get("standby") == "true"},
        "failures": [f.attrib for f in mon.iter("failure")],
        "started": {},  # resource or clone id -> list of nodes (one entry per instance)
        "roles": {},  # resource or clone id -> role -> nodes
    }
    for res in mon.iter("resource"):
        owner = res.get("id")
        for clone in mon.iter("clone"):
            if res in list(clone):
                owner = clone.get("id")
        if res.get("active") == "true" and res.get("failed") != "true":
            where = [n.get("name") for n in res.iter("node")]
            state["started"].setdefault(owner, []).extend(where)
            roles = state["roles"].setdefault(owner, {})
            roles.setdefault(res.get("role"), []).extend(where)
    return state


def healthy(node, inventory) -> dict | None:
    """The declared steady state: every node online, every clone everywhere, every
    primitive once, no failed actions. Returns the state when healthy, else None."""
    try:
        st = cluster_state(node)
    except Exception:  # a node mid-restart answers nothing useful
        return None
    hv = next(iter(inventory.values()))
    nodes = set(inventory)
    if not st["quorum"] or st["online"] != nodes or st["failures"]:
        return None
    for rsc in hv["pacemaker_resources"]:
        clone = rsc.get("clone") or rsc.get("promotable")
        rid = clone["id"] if clone else rsc["id"]
        where = st["started"].get(rid, [])
        if clone and sorted(where) != sorted(nodes):
            return None
        if not clone and len(where) != 1:
            return None
        if rsc.get("promotable"):
            want = int(rsc["promotable"]["meta"].get("promoted-max", 1))
            if len(st["roles"][rid].get("Promoted", [])) != min(want, len(nodes)):
                return None
            if any(role not in ("Promoted", "Unpromoted") for role in st["roles"][rid]):
                return None
    for dev in hv.get("pacemaker_stonith", []):
        where = st["started"].get(dev["id"], [])
        if len(where) != 1 or where[0] == dev["options"].get("pcmk_host_list"):
            return None
    return st


def wait_healthy(node, inventory, timeout: float = 180) -> dict:
    return wait_for(lambda: healthy(node, inventory), timeout, 2, "a healthy cluster")


def secret(inventory, name: str) -> str:
    """A generated secret, read from the controller-side secrets directory."""
    directory = Path(next(iter(inventory.values()))["ha_secrets_dir"])
    return (directory / name).read_text().strip()


def vip(inventory, name: str) -> str:
    return next(v["address"] for v in next(iter(inventory.values()))["ha_vips"]
                if v["name"] == name)


def pytest_collection_modifyitems(items):
    """Fault-injection modules (test_failover_*) run last: they change the cluster."""
    items.sort(key=lambda item: item.module.__name__.startswith("test_failover_"))


def halab(*args: str, timeout: float = 180) -> str:
    """Run the lab's own CLI on the host (power and network faults)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "halab", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"halab {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def init_pid(name: str) -> str | None:
    """The node's init as the lab recorded it: it changes on every (re)boot."""
    path = Path(os.environ.get("HALAB_STATE_DIR", "/var/lib/halab")) / "nodes" / name / "init.pid"
    try:
        return path.read_text().split()[0]
    except (OSError, IndexError):
        return None


def fence_history(node, target: str) -> list[dict]:
    """Every fencing action against `target` the cluster recorded (--verbose: without it
    only the latest shows), with `completed` also as epoch seconds in `at`."""
    import calendar

    out = node.run(f"stonith_admin --history {target} --verbose --output-as=xml")
    if out.rc != 0:
        return []
    events = []
    for e in ET.fromstring(out.stdout).iter("fence_event"):
        ev = dict(e.attrib)
        if ev.get("completed"):
            ev["at"] = calendar.timegm(time.strptime(ev["completed"], "%Y-%m-%d %H:%M:%SZ"))
        events.append(ev)
    return events


def fenced_since(node, target: str, since: float, status: str = "success") -> list[dict]:
    """Fencing actions against `target` completed (to the second) at or after `since`."""
    return [e for e in fence_history(node, target)
            if e.get("status") == status and e.get("at", 0) >= int(since)]
