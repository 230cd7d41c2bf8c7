"""The failover catalogue (halab/failover.py) on the lab: each scenario starts from a
healthy cluster, injects one real fault, checks what must hold while it lasts (VIPs
moved, a Redis master elsewhere, Galera and RabbitMQ going on, no VIP on two nodes,
clients back through the VIPs), restores, waits for full health, and checks that no
acknowledged write was lost. Runs last (conftest orders test_failover_* modules)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pika
import pytest
from conftest import ROOT
from test_stateful import amqp

from halab import failover

RESULTS = Path(os.environ.get("HALAB_RESULTS", ROOT / "reports" / "catalogue.jsonl"))


@pytest.fixture(scope="module")
def lab(inventory):
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    return failover.Lab(inventory)


def figures(result: dict) -> str:
    keys = ("detected_s", "fenced_s", "vips_moved_s", "redis_promoted_s", "resource_back_s",
            "services_back_s", "galera_write_gap_s", "keystone_gap_s", "healthy_again_s")
    shown = [f"{k}={result[k]}" for k in keys if result.get(k) is not None]
    for svc, s in result.get("services", {}).items():
        shown.append(f"{svc}:{s['recovered_s']}")
    return " ".join(shown)


@pytest.mark.parametrize("scenario", list(failover.CATALOGUE))
def test_scenario(lab, scenario):
    started = time.monotonic()
    result = failover.run(lab, scenario)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps({k: v for k, v in result.items() if k != "samples"}) + "\n")
    print(f"\n{scenario} (victim {result['victim'] or '-'}, "
          f"{time.monotonic() - started:.0f}s): {figures(result)}")
    for key, data in result["data"].items():
        print(f"  {key}: {data}")
    assert not result["violations"], result["violations"]
    if failover.CATALOGUE[scenario].kind in ("power", "partition", "maintenance"):
        assert result["detected_s"] is not None and result["vips_moved_s"] is not None
    if result["data"]:
        assert result["data"]["bank"]["acknowledged"] > 0, "the bank made no transfer"


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
