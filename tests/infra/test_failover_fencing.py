"""Fencing that really fences: the lab's fence_halab devices power nodes off and on
through the host's switch. Each test starts from a healthy cluster and ends healthy."""

from __future__ import annotations

import calendar
import time
import xml.etree.ElementTree as ET

import pytest
from conftest import (
    cluster_state,
    fenced_since,
    halab,
    init_pid,
    lab_only,
    wait_for,
    wait_healthy,
)

pytestmark = lab_only


@pytest.fixture
def gate(any_node, inventory, nodes):
    """Healthy before; healed, switch on and healthy after, whatever happened."""
    if not inventory.shared.get("ha_fencing"):
        pytest.skip("this inventory declares no fencing")
    wait_healthy(any_node, inventory)
    yield
    halab("fencing", "start")
    halab("heal")
    for name in inventory:
        if init_pid(name) is None:
            halab("start", name)
    wait_healthy(any_node, inventory, timeout=420, clean=True)


def test_stonith_admin_reboot_power_cycles_the_node(gate, nodes, inventory):
    names = list(inventory)
    target, observer = names[-1], nodes[names[0]]
    before_pid, t0 = init_pid(target), time.time()
    observer.check_output(f"stonith_admin --reboot {target} --timeout 120")
    assert init_pid(target) != before_pid, "the node did not power-cycle"
    assert fenced_since(observer, target, t0)
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
            if starts:  # the nodes keep UTC
                return calendar.timegm(time.strptime(starts[-1].get("last-rc-change"),
                                                     "%a %b %d %H:%M:%S %Y"))
    return None


def test_partition_the_majority_fences_before_it_recovers(gate, any_node, nodes, inventory):
    rsc = inventory.vip_resource("internal_api")
    victim = cluster_state(any_node)["started"][rsc][0]
    observer = next(n for name, n in nodes.items() if name != victim)
    before_pid, since = init_pid(victim), time.time()
    t0 = time.monotonic()
    halab("isolate", victim)
    fenced = wait_for(lambda: fenced_since(observer, victim, since), 120, 0.5,
                      f"{victim} fenced by the majority")
    fenced_after = time.monotonic() - t0
    new_owner = wait_for(
        lambda: [n for n in cluster_state(observer)["started"].get(rsc, []) if n != victim],
        120, 0.5, f"{rsc} elsewhere")[0]
    moved_after = time.monotonic() - t0
    print(f"\npartition of {victim}: fenced after {fenced_after:.1f}s, "
          f"{rsc} on {new_owner} after {moved_after:.1f}s")
    # Safety: the VIP started on the majority no earlier than the fencing completed
    # (both recorded by the cluster, to the second).
    completed = fenced[0]["at"]
    started = start_time(observer, rsc, new_owner)
    assert started is not None, f"no start of {rsc} recorded on {new_owner}"
    assert started >= completed, "the VIP started elsewhere before the fencing completed"
    assert init_pid(victim) != before_pid, "fencing did not power-cycle the isolated node"
    # Rebooted, still cut off: it must stay out until healed.
    assert victim not in cluster_state(observer)["online"]
    halab("heal", victim)
    wait_for(lambda: victim in cluster_state(observer)["online"], 180, 2, f"{victim} rejoined")


def test_a_node_whose_corosync_dies_is_fenced(gate, nodes, inventory):
    names = list(inventory)
    victim, observer = names[1], nodes[names[0]]
    before_pid, since = init_pid(victim), time.time()
    nodes[victim].run("kill -9 $(pidof corosync)")
    wait_for(lambda: fenced_since(observer, victim, since), 120, 0.5,
             f"{victim} fenced after corosync died")
    print(f"\ncorosync killed on {victim}: fenced after {time.time() - since:.1f}s")
    wait_for(lambda: init_pid(victim) not in (None, before_pid), 60, 1, f"{victim} rebooted")
    wait_for(lambda: victim in cluster_state(observer)["online"], 180, 2, f"{victim} rejoined")


def test_without_fencing_the_cluster_does_not_recover_a_lost_node(gate, any_node, nodes,
                                                                     inventory):
    rsc = inventory.vip_resource("internal_api")
    victim = cluster_state(any_node)["started"][rsc][0]
    observer = next(n for name, n in nodes.items() if name != victim)
    since = time.time()
    halab("fencing", "stop")
    halab("kill", victim)
    # The cluster tries, fails, and keeps the lost node's resources where they were.
    wait_for(lambda: fenced_since(observer, victim, since, status="failed"),
             120, 1, "a failed fencing attempt")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert not [n for n in cluster_state(observer)["started"].get(rsc, []) if n != victim], \
            f"{rsc} recovered elsewhere without fencing {victim}"
        time.sleep(1)
    halab("fencing", "start")
    observer.check_output("pcs stonith cleanup")
    wait_for(lambda: fenced_since(observer, victim, since), 180, 1,
             f"{victim} fenced once the switch is back")
    wait_for(lambda: [n for n in cluster_state(observer)["started"].get(rsc, []) if n != victim],
             120, 1, f"{rsc} recovered")


# Holds a row lock in an open transaction, then idles or (argv[2] == "busy") waits
# for a statement whose answer comes 3 s later: the password comes on stdin.
HOLD_LOCK = """
import sys, time, pymysql
c = pymysql.connect(host=sys.argv[1], user="halab", password=sys.stdin.readline().strip(),
                    database="halab")
c.begin()
c.cursor().execute("SELECT v FROM halab_orphan WHERE id = %s FOR UPDATE", (sys.argv[3],))
print("locked", flush=True)
if sys.argv[2] == "busy":
    c.cursor().execute("SELECT SLEEP(3)")
time.sleep(300)
"""


@pytest.mark.parametrize("client", ["idle", "busy"])
def test_a_transaction_whose_client_lost_power_frees_its_locks(gate, any_node, inventory,
                                                                client):
    """A client that dies mid-transaction (here: on a node that loses power, as the
    VIP owner's HAProxy does) leaves its session open on the writer with its row locks,
    until the writer's kernel learns the peer is gone. Idle: not before wait_timeout
    (8 h) without TCP keepalives (galera_tcp_keepalive). Busy, the writer's answer
    unacknowledged: not before the kernel gives up retransmitting (15 retries, ~15 min,
    unless base_sysctl lowers net.ipv4.tcp_retries2) or a retransmission happens to
    draw a reset from the rebooted node."""
    import subprocess

    import pymysql

    from halab.lab import nodes, topology

    password = inventory.secret("galera_user_halab")
    row = ["idle", "busy"].index(client) + 1  # an orphan of one case cannot hold the other's

    def connect(host: str, timeout: float = 3) -> pymysql.Connection:
        return pymysql.connect(host=host, port=inventory.port("mysql"), user="halab",
                               password=password, database="halab", autocommit=True,
                               connect_timeout=timeout, read_timeout=timeout,
                               write_timeout=timeout)

    with connect(inventory.vip("internal_api")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS halab_orphan (id INT PRIMARY KEY, v INT)")
        cur.execute("INSERT IGNORE INTO halab_orphan VALUES (%s, 0)", (row,))
        cur.execute("SELECT @@hostname")
        writer = cur.fetchone()[0]
    victim = next(n for n in inventory if n != writer)
    holder = subprocess.Popen(
        [*nodes.ssh_command(topology.node(victim)), "python3", "-c", f"'{HOLD_LOCK}'",
         inventory.addresses()[writer], client, str(row)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        holder.stdin.write(f"{password}\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        halab("kill", victim)

        def lock_free() -> bool:
            try:
                with connect(inventory.vip("internal_api"), 2) as conn, conn.cursor() as cur:
                    cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
                    conn.begin()
                    cur.execute("SELECT v FROM halab_orphan WHERE id = %s FOR UPDATE", (row,))
                    conn.rollback()
                return True
            except pymysql.MySQLError:
                return False

        wait_for(lock_free, 30, 0.5, f"the lock {victim}'s dead client held on {writer}")
        print(f"\n{victim} lost power holding a lock on {writer} ({client}): free after "
              f"{time.monotonic() - t0:.1f}s")
    finally:
        holder.kill()
        holder.wait()
