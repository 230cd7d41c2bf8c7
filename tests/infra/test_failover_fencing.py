"""Fencing that really fences: the lab's fence_halab devices power nodes off and on
through the host's switch. Each test starts from a healthy cluster and ends healthy."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest
from conftest import (
    cluster_state,
    fence_history,
    halab,
    init_pid,
    vip,
    wait_for,
    wait_healthy,
)


@pytest.fixture
def gate(any_node, inventory, nodes):
    """Healthy before; healed, switch on and healthy after, whatever happened."""
    if not next(iter(inventory.values())).get("ha_fencing"):
        pytest.skip("this inventory declares no fencing")
    wait_healthy(any_node, inventory)
    yield
    halab("fencing", "start")
    halab("heal")
    for name in inventory:
        if init_pid(name) is None:
            halab("start", name)
    wait_healthy(any_node, inventory, timeout=420)


def successes(history: list[dict]) -> list[dict]:
    return [e for e in history if e.get("status") == "success"]


def test_stonith_admin_reboot_power_cycles_the_node(gate, nodes, inventory):
    names = list(inventory)
    target, observer = names[-1], nodes[names[0]]
    before_pid, before = init_pid(target), len(successes(fence_history(observer, target)))
    observer.check_output(f"stonith_admin --reboot {target} --timeout 120")
    assert init_pid(target) != before_pid, "the node did not power-cycle"
    assert len(successes(fence_history(observer, target))) == before + 1
    wait_for(lambda: target in cluster_state(observer)["online"], 180, 2, f"{target} to rejoin")


def start_time(node, rsc: str, on: str) -> float | None:
    """When `rsc` last started on node `on` (the cluster's operation history)."""
    out = node.check_output("crm_mon --one-shot --output-as=xml --include=operations")
    for n in ET.fromstring(out).iter("node"):
        if n.get("name") != on:
            continue
        for hist in n.iter("resource_history"):
            if hist.get("id") != rsc:
                continue
            starts = [op for op in hist.iter("operation_history") if op.get("task") == "start"]
            if starts:
                return time.mktime(time.strptime(starts[-1].get("last-rc-change"),
                                                 "%a %b %d %H:%M:%S %Y"))
    return None


def test_partition_the_majority_fences_before_it_recovers(gate, any_node, nodes, inventory):
    rsc = f"ip-{vip(inventory, 'internal_api')}"
    victim = cluster_state(any_node)["started"][rsc][0]
    observer = next(n for name, n in nodes.items() if name != victim)
    before_pid = init_pid(victim)
    t0 = time.monotonic()
    halab("isolate", victim)
    fenced = wait_for(lambda: successes(fence_history(observer, victim)), 120, 0.5,
                      f"{victim} fenced by the majority")
    fenced_after = time.monotonic() - t0
    new_owner = wait_for(
        lambda: [n for n in cluster_state(observer)["started"].get(rsc, []) if n != victim],
        120, 0.5, f"{rsc} elsewhere")[0]
    moved_after = time.monotonic() - t0
    print(f"\npartition of {victim}: fenced after {fenced_after:.1f}s, "
          f"{rsc} on {new_owner} after {moved_after:.1f}s")
    completed = int(fenced[-1]["completed"]) if fenced[-1].get("completed", "").isdigit() else None
    started = start_time(observer, rsc, new_owner)
    if completed and started:
        assert started >= completed - 1, "the VIP started elsewhere before the fencing completed"
    assert init_pid(victim) != before_pid, "fencing did not power-cycle the isolated node"
    # Rebooted, still cut off: it must stay out until healed.
    assert victim not in cluster_state(observer)["online"]
    halab("heal", victim)
    wait_for(lambda: victim in cluster_state(observer)["online"], 180, 2, f"{victim} rejoined")


def test_a_node_whose_corosync_dies_is_fenced(gate, nodes, inventory):
    names = list(inventory)
    victim, observer = names[1], nodes[names[0]]
    before_pid, before = init_pid(victim), len(successes(fence_history(observer, victim)))
    nodes[victim].run("kill -9 $(pidof corosync)")
    wait_for(lambda: len(successes(fence_history(observer, victim))) > before, 120, 1,
             f"{victim} fenced after corosync died")
    wait_for(lambda: init_pid(victim) not in (None, before_pid), 60, 1, f"{victim} rebooted")
    wait_for(lambda: victim in cluster_state(observer)["online"], 180, 2, f"{victim} rejoined")


def test_without_fencing_the_cluster_does_not_recover_a_lost_node(gate, any_node, nodes,
                                                                     inventory):
    rsc = f"ip-{vip(inventory, 'internal_api')}"
    victim = cluster_state(any_node)["started"][rsc][0]
    observer = next(n for name, n in nodes.items() if name != victim)
    halab("fencing", "stop")
    halab("kill", victim)
    # The cluster tries, fails, and keeps the lost node's resources where they were.
    wait_for(lambda: [e for e in fence_history(observer, victim) if e.get("status") == "failed"],
             120, 1, "a failed fencing attempt")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert not [n for n in cluster_state(observer)["started"].get(rsc, []) if n != victim], \
            f"{rsc} recovered elsewhere without fencing {victim}"
        time.sleep(1)
    halab("fencing", "start")
    observer.check_output("pcs stonith cleanup")
    wait_for(lambda: successes(fence_history(observer, victim)), 180, 1,
             f"{victim} fenced once the switch is back")
    wait_for(lambda: [n for n in cluster_state(observer)["started"].get(rsc, []) if n != victim],
             120, 1, f"{rsc} recovered")
