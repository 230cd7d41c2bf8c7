"""The stateful tier: Galera promoted everywhere, Redis one master and two replicas,
RabbitMQ one cluster of three; each reached the way clients reach it."""

from __future__ import annotations

import json
import time
import uuid
from urllib import error, request

import pika
import pymysql
import pytest
import redis
from conftest import cluster_state, haproxy_servers, wait_for

# ---------------------------------------------------------------- Galera


def mysql(inventory, host: str, **kw) -> pymysql.Connection:
    return pymysql.connect(host=host, user="halab", password=inventory.secret("galera_user_halab"),
                           database="halab", connect_timeout=5, autocommit=True, **kw)


def clustercheck(address: str) -> int:
    try:
        with request.urlopen(f"http://{address}:9200/", timeout=3) as resp:
            return resp.status
    except error.HTTPError as exc:
        return exc.code


def test_galera_promoted_on_every_controller(any_node, inventory):
    roles = cluster_state(any_node)["roles"]["galera-master"]
    assert sorted(roles.get("Promoted", [])) == sorted(inventory)


def test_galera_is_one_synced_primary_component(host, inventory):
    out = host.check_output(
        "mysql -Nse \"SHOW STATUS WHERE Variable_name IN "
        "('wsrep_cluster_size','wsrep_local_state_comment','wsrep_cluster_status')\"")
    status = dict(line.split("\t") for line in out.splitlines())
    assert status == {"wsrep_cluster_size": str(len(inventory)),
                      "wsrep_local_state_comment": "Synced", "wsrep_cluster_status": "Primary"}


def test_galera_settings_an_operator_expects(host):
    out = host.check_output(
        "mysql -Nse \"SELECT @@binlog_format, @@default_storage_engine, "
        "@@innodb_autoinc_lock_mode, @@innodb_flush_log_at_trx_commit, @@wsrep_sst_method\"")
    assert out.split("\t") == ["ROW", "InnoDB", "2", "1", "rsync"]


def test_a_write_through_the_mysql_vip_is_readable_on_every_node(inventory):
    token = uuid.uuid4().hex
    with mysql(inventory, inventory.vip("internal_api")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS probe (id VARCHAR(32) PRIMARY KEY)")
        cur.execute("INSERT INTO probe VALUES (%s)", (token,))
    for hv in inventory.values():
        with mysql(inventory, hv["ha_addresses"]["internal"]) as conn, conn.cursor() as cur:
            # wsrep_sync_wait: read after every write the cluster committed before it
            cur.execute("SET SESSION wsrep_sync_wait = 1")
            cur.execute("SELECT COUNT(*) FROM probe WHERE id = %s", (token,))
            assert cur.fetchone()[0] == 1


def test_clustercheck_answers_200_on_every_synced_node(inventory):
    for hv in inventory.values():
        assert clustercheck(hv["ha_addresses"]["internal"]) == 200


def test_clustercheck_refuses_a_desynced_node(nodes, inventory):
    name, node = next(iter(nodes.items()))
    address = inventory[name]["ha_addresses"]["internal"]
    try:
        node.check_output("mysql -e 'SET GLOBAL wsrep_desync = ON'")
        wait_for(lambda: clustercheck(address) == 503, 30, 0.5, "503 from a desynced node")
    finally:
        node.check_output("mysql -e 'SET GLOBAL wsrep_desync = OFF'")
    wait_for(lambda: clustercheck(address) == 200, 60, 0.5, "200 again once synced")


def test_mysql_listener_has_one_active_backend_and_the_others_backup(inventory):
    servers = haproxy_servers(inventory, "mysql")
    assert sorted(servers) == sorted(inventory)
    assert sorted(s["bck"] for s in servers.values()) == ["0"] + ["1"] * (len(inventory) - 1)
    # One failed clustercheck under load shows as "UP 1/2" until the next check (1 s).
    wait_for(lambda: {n: (s["status"], s["check_status"])
                      for n, s in haproxy_servers(inventory, "mysql").items()
                      if s["status"] != "UP"} == {}, 30, 1, "every mysql backend UP")


def test_no_anonymous_users_and_root_only_on_the_socket(any_node, inventory):
    anonymous = "mysql -Nse \"SELECT COUNT(*) FROM mysql.user WHERE user=''\""
    assert any_node.check_output(anonymous) == "0"
    direct = inventory.shared["ha_addresses"]["internal"]
    for host in (inventory.vip("internal_api"), direct):
        with pytest.raises(pymysql.err.OperationalError):
            pymysql.connect(host=host, user="root", password="", connect_timeout=5)


# ---------------------------------------------------------------- Redis


def redis_at(inventory, host: str) -> redis.Redis:
    return redis.Redis(host=host, password=inventory.secret("redis_password"),
                       socket_timeout=5, socket_connect_timeout=5)


def test_redis_has_exactly_one_master(any_node, inventory):
    roles = cluster_state(any_node)["roles"]["redis-master"]
    assert len(roles.get("Promoted", [])) == 1
    assert len(roles.get("Unpromoted", [])) == len(inventory) - 1
    masters = [
        n for n, hv in inventory.items()
        if redis_at(inventory, hv["ha_addresses"]["internal"]).info("replication")["role"]
        == "master"
    ]
    assert masters == roles["Promoted"]


def test_redis_replicas_are_linked_to_the_master(any_node, inventory):
    roles = cluster_state(any_node)["roles"]["redis-master"]
    for name in roles["Unpromoted"]:
        info = redis_at(inventory, inventory[name]["ha_addresses"]["internal"]).info("replication")
        assert info["role"] == "slave"
        assert info["master_link_status"] == "up"
        assert info["master_host"] == roles["Promoted"][0]


def test_a_write_through_the_redis_vip_reaches_every_replica(any_node, inventory):
    key, value = f"halab:{uuid.uuid4().hex}", uuid.uuid4().hex
    client = redis_at(inventory, inventory.vip("redis"))
    assert client.set(key, value)
    assert client.execute_command("WAIT", len(inventory) - 1, 5000) == len(inventory) - 1
    for name in cluster_state(any_node)["roles"]["redis-master"]["Unpromoted"]:
        replica = redis_at(inventory, inventory[name]["ha_addresses"]["internal"])
        assert replica.get(key).decode() == value


def test_redis_listener_marks_only_the_master_up(any_node, inventory):
    master = cluster_state(any_node)["roles"]["redis-master"]["Promoted"][0]
    servers = haproxy_servers(inventory, "redis")
    assert {n for n, s in servers.items() if s["status"] == "UP"} == {master}


def test_redis_refuses_clients_without_the_password(inventory):
    bare = redis.Redis(host=inventory.vip("redis"), socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        bare.set("halab:nopass", "x")


# ---------------------------------------------------------------- RabbitMQ


def amqp(inventory, host: str, user: str = "openstack", password: str | None = None):
    password = password if password is not None else inventory.secret("rabbitmq_user_openstack")
    params = pika.ConnectionParameters(host, credentials=pika.PlainCredentials(user, password),
                                       socket_timeout=5, blocked_connection_timeout=10,
                                       connection_attempts=1)
    return pika.BlockingConnection(params)


def test_rabbitmq_clone_runs_and_forms_one_cluster(host, any_node, inventory):
    assert sorted(cluster_state(any_node)["started"]["rabbitmq-clone"]) == sorted(inventory)
    status = json.loads(host.check_output("rabbitmqctl -q cluster_status --formatter json"))
    assert sorted(status["running_nodes"]) == sorted(f"rabbit@{n}" for n in inventory)


def test_rabbitmq_ha_policy_applied(any_node, inventory):
    declared = {p["name"]: p for p in inventory.shared["rabbitmq_policies"]}
    live = json.loads(any_node.check_output("rabbitmqctl -q list_policies --formatter json"))
    assert {p["name"] for p in live} == set(declared)
    for policy in live:
        definition = policy["definition"]
        if isinstance(definition, str):
            definition = json.loads(definition)
        assert definition == declared[policy["name"]]["definition"]
        assert policy["pattern"] == declared[policy["name"]]["pattern"]


def test_a_persistent_message_published_on_one_node_is_consumed_on_another(inventory, nodes):
    names = list(inventory)
    queue, body = f"halab.probe.{uuid.uuid4().hex[:8]}", uuid.uuid4().hex.encode()
    pub = amqp(inventory, inventory[names[0]]["ha_addresses"]["internal"])
    try:
        ch = pub.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue, durable=True)
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        pub.close()
    con = amqp(inventory, inventory[names[1]]["ha_addresses"]["internal"])
    try:
        ch = con.channel()
        deadline = time.monotonic() + 10
        method, _, got = ch.basic_get(queue, auto_ack=True)
        while method is None and time.monotonic() < deadline:
            time.sleep(0.2)
            method, _, got = ch.basic_get(queue, auto_ack=True)
        assert got == body
        mirrors = nodes[names[0]].check_output(
            "rabbitmqctl -q list_queues name policy synchronised_slave_pids --formatter json")
        assert queue in mirrors and "ha-all" in mirrors
        ch.queue_delete(queue)
    finally:
        con.close()


def test_rabbitmq_guest_is_gone(inventory):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        amqp(inventory, inventory.shared["ha_addresses"]["internal"],
             user="guest", password="guest")


# ---------------------------------------------------------------- only Pacemaker starts them


@pytest.mark.parametrize("unit", ["mariadb", "redis-server", "rabbitmq-server"])
def test_only_pacemaker_starts_stateful_services(host, unit):
    assert not host.service(unit).is_enabled


@pytest.mark.parametrize("unit", ["mariadb.socket", "mariadb-extra.socket"])
def test_mariadb_socket_activation_is_masked(host, unit):
    assert host.run(f"systemctl is-enabled {unit}").stdout.strip() == "masked"
