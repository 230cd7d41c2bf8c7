"""Full cluster stop and start, as an operator does it (pcs cluster stop/start --all):
every set comes back, Galera bootstraps by itself, and data written before is there."""

from __future__ import annotations

import time
import uuid

import pika
from conftest import vip, wait_for, wait_healthy
from test_stateful import amqp, mysql, redis_at


def test_full_cluster_stop_and_start(any_node, nodes, inventory):
    wait_healthy(any_node, inventory)
    token = uuid.uuid4().hex
    with mysql(inventory, vip(inventory, "internal_api")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS probe (id VARCHAR(32) PRIMARY KEY)")
        cur.execute("INSERT INTO probe VALUES (%s)", (token,))
    client = redis_at(inventory, vip(inventory, "redis"))
    client.set(f"halab:restart:{token}", token)
    assert client.execute_command("WAIT", len(inventory) - 1, 5000) == len(inventory) - 1

    try:
        any_node.check_output("pcs cluster stop --all")
        for name, node in nodes.items():
            assert node.run("crm_mon --one-shot").rc != 0, f"{name} still runs pacemaker"
            assert not node.process.filter(comm="mariadbd"), f"{name} still runs mysqld"
    finally:
        started = time.monotonic()
        result = any_node.run("pcs cluster start --all")
        if result.rc != 0:
            # Seen once here: pcsd on one node answered HTTP 400 to the remote start.
            # An operator then starts that node locally; the test does the same and
            # says so, since what is under test is the cluster coming back.
            print(f"\npcs cluster start --all: rc={result.rc}: {result.stderr.strip()}")
            for node in nodes.values():
                if node.run("systemctl is-active pacemaker").rc != 0:
                    node.check_output("pcs cluster start")
    wait_healthy(any_node, inventory, timeout=420)
    print(f"\npcs cluster start --all -> every set healthy: {time.monotonic() - started:.0f}s")

    with mysql(inventory, vip(inventory, "internal_api")) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM probe WHERE id = %s", (token,))
        assert cur.fetchone()[0] == 1
    for name, node in nodes.items():
        size = node.check_output("mysql -Nse \"SHOW STATUS LIKE 'wsrep_cluster_size'\"")
        assert size.split()[-1] == str(len(inventory)), name

    def redis_value():
        try:
            return redis_at(inventory, vip(inventory, "redis")).get(f"halab:restart:{token}")
        except Exception:  # the VIP's HAProxy marks the new master up within seconds
            return None

    assert wait_for(redis_value, 60, 1, "the key written before the restart") == token.encode()

    # Users and policies come back from the definitions file, guest does not.
    conn = amqp(inventory, next(iter(inventory.values()))["ha_addresses"]["internal"])
    conn.close()
    try:
        amqp(inventory, next(iter(inventory.values()))["ha_addresses"]["internal"],
             user="guest", password="guest")
        raise AssertionError("guest logged in after the restart")
    except pika.exceptions.ProbableAuthenticationError:
        pass
    assert "ha-all" in any_node.check_output("rabbitmqctl -q list_policies")
