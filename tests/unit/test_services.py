"""What `halab status` makes of the services' own answers: HAProxy's CSV, RabbitMQ's
cluster_status JSON, and the problems named from Galera, Redis, RabbitMQ and HAProxy."""

from __future__ import annotations

import json

from halab.cluster import services

CSV = """# pxname,svname,status,check_status,
keystone,FRONTEND,OPEN,,
keystone,overcloud-controller-0,UP,L7OK,
keystone,overcloud-controller-1,DOWN,L4TOUT,
keystone,BACKEND,UP,,
redis,overcloud-controller-0,UP,L7OK,
redis,overcloud-controller-1,DOWN,L7RSP,
"""

SYNCED = {"state": "Synced", "cluster": "Primary", "size": 3, "ready": True}


def test_haproxy_csv_gives_servers_by_proxy():
    servers = services.parse_haproxy_csv(CSV)
    assert sorted(servers) == ["keystone", "redis"]
    assert servers["keystone"]["overcloud-controller-1"]["check_status"] == "L4TOUT"
    assert "FRONTEND" not in servers["keystone"] and "BACKEND" not in servers["keystone"]


def test_rabbitmq_cluster_status_json():
    text = json.dumps({"running_nodes": ["rabbit@b", "rabbit@a"],
                       "partitions": {"rabbit@a": ["rabbit@b"]}})
    assert services.rabbitmq_partitions(text) == {
        "running": ["rabbit@a", "rabbit@b"], "partitions": {"rabbit@a": ["rabbit@b"]}}


def test_a_healthy_view_has_no_problem():
    view = {"galera": {"a": SYNCED, "b": SYNCED},
            "redis": {"a": {"role": "master", "replicas": 1},
                      "b": {"role": "replica", "master": "a", "link": "up"}},
            "rabbitmq": {"running": ["rabbit@a", "rabbit@b"], "partitions": {}},
            "haproxy": {"redis": services.parse_haproxy_csv(CSV)["redis"]}}
    assert services.problems(view) == []


def test_each_degraded_service_is_named():
    servers = services.parse_haproxy_csv(CSV)
    view = {"galera": {"a": SYNCED, "b": {**SYNCED, "state": "Donor/Desynced"},
                       "c": {"error": "OperationalError: timed out"}},
            "redis": {"a": {"role": "master", "replicas": 0},
                      "b": {"role": "master", "replicas": 0},
                      "c": {"role": "replica", "master": "a", "link": "down"}},
            "rabbitmq": {"running": ["rabbit@a"], "partitions": {"rabbit@a": ["rabbit@b"]}},
            "haproxy": {**servers, "mysql": {"a": {"status": "DOWN"}}}}
    assert services.problems(view) == [
        "galera on b: Donor/Desynced, Primary, ready",
        "galera on c: OperationalError: timed out",
        "redis: 2 masters (a, b)",
        "redis on c: replica link down",
        "rabbitmq partitions: {'rabbit@a': ['rabbit@b']}",
        "haproxy keystone/overcloud-controller-1: DOWN",
        "haproxy mysql: no server UP",
    ]


def test_an_unreachable_stats_page_is_a_problem():
    assert services.problems({"haproxy_error": "timed out"}) == [
        "haproxy stats page: timed out"]
