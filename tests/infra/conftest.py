"""Fixtures for the testinfra suite that molecule's verify runs against the lab.

Per-host tests use testinfra's `host` fixture (`--hosts=ansible://controllers`).
Cluster-wide tests use `nodes` (every controller by name) and `inventory` (the
declared data, as ansible-inventory resolves it)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import testinfra
import yaml

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = os.environ.get("HALAB_INVENTORY", str(ROOT / "inventory" / "lab"))
GROUP = "controllers"


@pytest.fixture(scope="session")
def inventory() -> dict:
    """Hostvars of every controller (group_vars merged, not templated)."""
    out = subprocess.run(
        ["ansible-inventory", "-i", INVENTORY, "--list"],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=60,
    ).stdout
    data = json.loads(out)
    hosts = data[GROUP]["hosts"]
    return {h: data["_meta"]["hostvars"][h] for h in hosts}


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
