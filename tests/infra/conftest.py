"""Fixtures for the testinfra suite that molecule's verify runs against the lab.

Per-host tests use testinfra's `host` fixture (`--hosts=ansible://controllers`).
Cluster-wide tests use `nodes` (every controller by name) and `inventory` (the
declared data, templated by Ansible)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import testinfra

from halab.cluster import crm, services
from halab.cluster.declared import Declared
from halab.lab import poll

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = os.environ.get("HALAB_INVENTORY", str(ROOT / "inventory" / "lab"))
ON_LAB = Path(INVENTORY).resolve() == (ROOT / "inventory" / "lab").resolve()
# Tests of the lab's own machinery (nspawn nodes, the host's power switch and state),
# skipped when the suite runs against Vagrant VMs or real machines.
lab_only = pytest.mark.skipif(not ON_LAB, reason="the lab's own nodes and power switch")


@pytest.fixture(scope="session")
def inventory() -> Declared:
    """Each controller's cluster variables, templated as the playbooks see them."""
    return Declared.load(INVENTORY)


@pytest.fixture(scope="session")
def nodes(inventory) -> dict:
    return {
        name: testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")
        for name in inventory
    }


@pytest.fixture(scope="session")
def any_node(nodes):
    return next(iter(nodes.values()))


def wait_for(condition, timeout: float, interval: float = 1.0, what: str = "condition"):
    """poll.until failing the test at the deadline."""
    return poll.until(condition, timeout, what, interval, error=pytest.fail.Exception)


def haproxy_servers(inventory, proxy: str) -> dict[str, dict]:
    """Rows of HAProxy's CSV stats for one listener, by server name (the stats page on
    the internal VIP)."""
    address, port = inventory.stats
    return services.haproxy_backends(address, inventory.secret("haproxy_stats_password"),
                                     port).get(proxy, {})


def cluster_state(node) -> dict:
    """crm_mon reduced to what the health gate and the tests look at."""
    return crm.state(node.check_output(crm.CRM_MON))


def healthy(node, inventory, clean: bool = False) -> dict | None:
    """The cluster's state when it is the declared steady state with no transition in
    progress, else None. With
    `clean`, failed actions of a cluster otherwise as declared are cleared (a fault
    leaves them behind on purpose), as the failover catalogue does."""
    try:
        st = cluster_state(node)
    except Exception:  # a node mid-restart answers nothing useful
        return None
    hv, names = inventory.shared, set(inventory)
    if crm.unhealthy(st, hv, names) is None:
        return st if crm.dc_idle(node.run(crm.DC_STATE).stdout) else None
    if clean and st["failures"] and crm.unhealthy({**st, "failures": []}, hv, names) is None:
        node.run("pcs resource cleanup")
    return None


def wait_healthy(node, inventory, timeout: float = 180, clean: bool = False) -> dict:
    return wait_for(lambda: healthy(node, inventory, clean), timeout, 2, "a healthy cluster")


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


def init_pid(name: str) -> int | None:
    """The node's init while it runs: it changes on every (re)boot."""
    from halab.lab import nodes, topology

    return next(iter(nodes.node_inits(topology.node(name))), None)


def fenced_since(node, target: str, since: float, status: str = "success") -> list[dict]:
    """Fencing actions against `target` with `status`, completed at or after `since`."""
    out = node.run(crm.fence_history_command(target))
    return crm.fenced_since(out.stdout, since, status) if out.rc == 0 else []


_STARTED = pytest.StashKey[float]()


def pytest_runtest_setup(item):
    item.stash[_STARTED] = time.time()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed lab test leaves a bundle of the cluster's records under reports/bundles,
    taken before its fixtures restore anything."""
    report = yield
    if report.failed:
        # What pytest prints and writes to reports/verify.xml: no secret's value.
        from halab.cluster import declared
        from halab.lab import topology

        hidden = declared.secret_values(topology.secrets_dir())
        report.longrepr = declared.scrub(report.longreprtext, hidden)
        report.sections = [(k, declared.scrub(v, hidden)) for k, v in report.sections]
    if report.when == "call" and report.failed:
        from halab.cluster import collect

        since = item.stash.get(_STARTED, time.time() - 600) - 30
        path = collect.bundle(item.name, since, ROOT / "reports" / "bundles",
                              extra={"failure.txt": report.longreprtext})
        report.sections.append(("bundle", f"the cluster's records: {path}"))
    return report
