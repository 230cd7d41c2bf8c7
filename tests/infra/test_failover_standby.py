"""A first failover: standby of a VIP owner moves its VIP, HAProxy answers there, and
unstandby brings the node back. Runs last (file order): it changes the cluster."""

from __future__ import annotations

import time

import pytest
from conftest import cluster_state, wait_for, wait_healthy
from test_active_active import http_status, stats_password, stats_url


@pytest.fixture
def standby(nodes, inventory, any_node):
    """Standby a node; always unstandby and wait for full health afterwards."""
    wait_healthy(any_node, inventory)
    done = []

    def put(node: str) -> None:
        any_node.check_output(f"pcs node standby {node}")
        done.append(node)

    yield put
    for node in done:
        any_node.run(f"pcs node unstandby {node}")
    wait_healthy(any_node, inventory)


def test_standby_of_the_stats_vip_owner_moves_the_vip(standby, any_node, inventory, nodes):
    hv = next(iter(inventory.values()))
    vip = next(v["address"] for v in hv["ha_vips"] if v["name"] == hv["haproxy_stats_vip"])
    rsc = f"ip-{vip}"
    owner = cluster_state(any_node)["started"][rsc][0]
    url, password = stats_url(inventory), stats_password(inventory)
    observer = next(n for name, n in nodes.items() if name != owner)

    started = time.monotonic()
    standby(owner)
    new_owner = wait_for(
        lambda: [n for n in cluster_state(observer)["started"].get(rsc, []) if n != owner],
        60, 0.2, f"{rsc} on another node")[0]

    def answers() -> bool:
        try:
            return http_status(url, "admin", password) == 200
        except OSError:
            return False

    wait_for(answers, 60, 0.1, "the stats page on the moved VIP")
    elapsed = time.monotonic() - started
    print(f"\nVIP {vip}: {owner} -> {new_owner}, HAProxy answering after {elapsed:.1f}s")
    assert new_owner != owner
    assert nodes[new_owner].check_output(f"ip -o -4 addr show to {vip}/32")
    assert not nodes[owner].check_output(f"ip -o -4 addr show to {vip}/32")
    assert owner not in cluster_state(observer)["started"]["haproxy-clone"]
