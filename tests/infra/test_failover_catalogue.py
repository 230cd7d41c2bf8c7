"""The failover catalogue (halab/failover/catalogue.py) on the lab: each scenario starts from a
healthy cluster, injects one real fault, checks what must hold while it lasts (VIPs
moved, a Redis master elsewhere, Galera and RabbitMQ going on, no VIP on two nodes,
clients back through the VIPs), restores, waits for full health, and checks that no
acknowledged write was lost. Runs last (conftest orders test_failover_* modules)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pika
import pytest
from conftest import ROOT
from test_stateful import amqp

from halab.errors import HalabError
from halab.failover import catalogue
from halab.failover.result import Result

FENCE_BOUND = 5.0  # seconds from the fence request to its confirmation
RESULTS = Path(os.environ.get("HALAB_RESULTS", ROOT / "reports" / "catalogue.jsonl"))
# On the lab these go through the remote backend (fence device, nftables, ssh), so the
# path real machines take runs on every `make test`; the others use the lab's own.
REMOTE = ("power-loss-public-vip-owner", "partition", "kill-redis-master")


def allowed(cluster: catalogue.Cluster) -> catalogue.Cluster:
    """Real machines take faults only when asked to (`make verify ... YES=1`)."""
    try:
        catalogue.check_allowed(cluster, bool(os.environ.get("HALAB_FAILOVER_YES")))
    except HalabError as exc:
        pytest.skip(f"{exc}\n{catalogue.plan(cluster, list(catalogue.CATALOGUE), 1)}")
    return cluster


@pytest.fixture(scope="module")
def lab(inventory):
    """The cluster with the inventory's own backend: the lab's on the lab."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    return allowed(catalogue.Cluster(inventory))


@pytest.fixture(scope="module")
def remote(inventory):
    return allowed(catalogue.Cluster(inventory, "remote"))


def figures(result: Result) -> str:
    keys = ("detected_s", "fenced_s", "vips_moved_s", "redis_promoted_s", "resource_back_s",
            "services_back_s", "galera_write_gap_s", "keystone_gap_s", "healthy_again_s")
    shown = [f"{k}={v}" for k in keys if (v := getattr(result, k)) is not None]
    for svc, s in result.services.items():
        shown.append(f"{svc}:{s['recovered_s']}"
                     + (f"(+{s['return_outage_s']} on return)" if s.get("return_outage_s") else ""))
    phases = " ".join(f"{k}={v}" for k, v in result.timeline.items() if ":" not in k)
    return " ".join(shown) + (f"\n  cluster's records: {phases}" if phases else "")


@pytest.mark.parametrize("scenario", list(catalogue.CATALOGUE))
def test_scenario(lab, remote, scenario):
    cluster = remote if scenario in REMOTE else lab
    kind = catalogue.CATALOGUE[scenario].kind
    if kind in ("power", "quorum") and cluster.faults.kind == "remote" and not cluster.fencing:
        pytest.skip("power faults on these machines go through their fence devices, and "
                    "the inventory declares none (ha_fencing)")
    started = time.monotonic()
    result = catalogue.run(cluster, scenario)
    with RESULTS.open("a") as fh:
        fh.write(result.to_json(samples=False) + "\n")
    print(f"\n{scenario} ({cluster.faults.kind} faults, victim {result.victim or '-'}, "
          f"{time.monotonic() - started:.0f}s): {figures(result)}")
    for key, data in result.data.items():
        print(f"  {key}: {data}")
    assert not result.violations, result.violations
    if kind in ("power", "partition", "maintenance"):
        assert result.detected_s is not None and result.vips_moved_s is not None
    if kind in ("power", "partition") and lab.fencing:
        # A correctness bound, not a benchmark: the lab's switch answers within ~1 s.
        phases = result.timeline
        assert {"fence_requested", "fence_confirmed"} <= set(phases), \
            f"no fencing of {result.victim} in the cluster's records: {phases}"
        took = phases["fence_confirmed"] - phases["fence_requested"]
        assert took <= FENCE_BOUND, f"fencing took {took:.1f}s from request to confirmation"
    if result.data:
        assert result.data["bank"]["acknowledged"] > 0, "the bank made no transfer"


def test_after_a_full_restart_definitions_came_back(lab, inventory, nodes):
    """Runs after the catalogue's full restart: users and policies come back from the
    definitions file and guest does not; Galera formed one cluster of three."""
    address = lab.hv["ha_addresses"]["internal"]
    amqp(inventory, address).close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        amqp(inventory, address, user="guest", password="guest")
    node = next(iter(nodes.values()))
    assert "ha-all" in node.check_output("rabbitmqctl -q list_policies")
    for name, n in nodes.items():
        size = n.check_output("mysql -Nse \"SHOW STATUS LIKE 'wsrep_cluster_size'\"")
        assert size.split()[-1] == str(len(inventory)), name
