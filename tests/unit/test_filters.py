"""The filters that turn ha_vips into Pacemaker data."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.halab.ha.plugins.filter import ha_cluster

NETS = {"external": {"cidr": "198.51.100.64/26", "interface": "ext0"},
        "internal": {"cidr": "198.51.100.0/26", "interface": "int0"}}
VIPS = [{"name": "public", "network": "external", "address": "198.51.100.100"},
        {"name": "internal_api", "network": "internal", "address": "198.51.100.50"}]


def test_each_vip_becomes_an_ipaddr2_with_its_nic():
    res = ha_cluster.vip_resources(VIPS, NETS)
    assert [r["id"] for r in res] == ["ip-198.51.100.100", "ip-198.51.100.50"]
    assert res[0]["agent"] == "ocf:heartbeat:IPaddr2"
    assert res[0]["options"] == {"ip": "198.51.100.100", "cidr_netmask": "32", "nic": "ext0"}
    assert res[1]["options"]["nic"] == "int0"


def test_each_vip_is_ordered_before_and_colocated_with_haproxy():
    c = ha_cluster.vip_constraints(VIPS)
    assert {"first": "ip-198.51.100.50", "then": "haproxy-clone", "kind": "Optional",
            "symmetrical": False} in c["order"]
    assert {"resource": "ip-198.51.100.50", "with": "haproxy-clone",
            "score": "INFINITY"} in c["colocation"]


def test_role_locations_and_merge():
    loc = ha_cluster.role_locations({"haproxy-clone": "haproxy"})
    merged = ha_cluster.merge_constraints(ha_cluster.vip_constraints(VIPS), {"location": loc})
    assert merged["location"] == [{"resource": "haproxy-clone", "rule": "haproxy-role eq true",
                                   "score": "0", "resource_discovery": "exclusive"}]
    assert len(merged["order"]) == 2


def test_stop_orders_reverse_the_start_orders_optionally():
    orders = [{"first": "galera-master", "first_action": "promote", "then": "api-clone",
               "symmetrical": False},
              {"first": "rabbitmq-clone", "then": "api-clone", "symmetrical": False}]
    stops = ha_cluster.stop_orders(orders, ["haproxy-clone"])
    assert [(o["first"], o["first_action"], o["then"], o["then_action"]) for o in stops] == [
        ("api-clone", "stop", "galera-master", "demote"),
        ("api-clone", "stop", "haproxy-clone", "stop"),
        ("api-clone", "stop", "rabbitmq-clone", "stop")]
    assert {(o["kind"], o["symmetrical"]) for o in stops} == {("Optional", False)}
    with pytest.raises(AnsibleFilterError):
        ha_cluster.stop_orders([{"first": "a", "then": "b", "then_action": "promote"}])


def test_vip_address_by_name():
    assert ha_cluster.vip_address(VIPS, "internal_api") == "198.51.100.50"
    with pytest.raises(AnsibleFilterError, match="no VIP named 'redis'"):
        ha_cluster.vip_address(VIPS, "redis")


def test_one_fence_device_per_host_with_host_options_and_never_on_itself():
    fencing = {"agent": "fence_ipmilan", "options": {"username": "admin"},
               "password_file": "/etc/cluster/fence_password"}
    hostvars = {"a": {"ha_fence_options": {"ip": "192.0.2.10"}}, "b": {}}
    devices = ha_cluster.stonith_devices(["a", "b"], fencing, hostvars)
    assert [d["id"] for d in devices] == ["fence-a", "fence-b"]
    assert devices[0]["options"] == {"username": "admin", "ip": "192.0.2.10",
                                     "pcmk_host_list": "a",
                                     "password_script": "cat /etc/cluster/fence_password"}
    assert devices[1]["options"]["pcmk_host_list"] == "b"
    locs = ha_cluster.stonith_locations(["a", "b"], fencing)["location"]
    assert {"resource": "fence-a", "node": "a", "score": "-INFINITY"} in locs


def test_no_fencing_declared_means_no_devices():
    assert ha_cluster.stonith_devices(["a"], {}, {}) == []
    assert ha_cluster.stonith_locations(["a"], {}) == {}


def test_duplicates_names_each_repeated_value_once():
    duplicates = ha_cluster.duplicates
    assert duplicates(["a", "b", "a", "c", "a", "b"]) == ["a", "b"]
    assert duplicates(["a", "b"]) == []


ADDRS = {"internal": "198.51.100.10", "external": "198.51.100.74"}
HAPROXY = [{"name": "keystone", "vips": ["public", "internal_api"], "port": 5000}]


def test_firewall_rules_open_each_haproxy_port_on_its_vips_per_network():
    rules = ha_cluster.firewall_rules(
        [{"name": "galera", "network": "internal", "tcp": [3306, "4567-4568"]},
         {"name": "corosync", "network": "internal", "udp": [5405]}],
        HAPROXY, VIPS, NETS, ADDRS)
    assert rules == [
        {"name": "keystone", "network": "external", "interface": "ext0",
         "daddr": ["198.51.100.100"], "tcp": ["5000"], "udp": [], "protocols": []},
        {"name": "keystone", "network": "internal", "interface": "int0",
         "daddr": ["198.51.100.50"], "tcp": ["5000"], "udp": [], "protocols": []},
        {"name": "galera", "network": "internal", "interface": "int0",
         "daddr": ["198.51.100.10"], "tcp": ["3306", "4567-4568"], "udp": [], "protocols": []},
        {"name": "corosync", "network": "internal", "interface": "int0",
         "daddr": ["198.51.100.10"], "tcp": [], "udp": ["5405"], "protocols": []},
    ]


def test_firewall_protocols_match_any_destination_and_empty_lists_open_nothing():
    rules = ha_cluster.firewall_rules(
        [{"name": "vrrp", "network": "external", "protocols": ["vrrp"]},
         {"name": "unused", "network": "external", "protocols": []}], [], VIPS, NETS, ADDRS)
    assert [(r["name"], r["daddr"], r["protocols"]) for r in rules] == [("vrrp", [], ["vrrp"])]


@pytest.mark.parametrize("entry, message", [
    ({"network": "internal", "tcp": [22]}, "has no name"),
    ({"name": "ssh", "network": "internal"}, r"ssh: no tcp, udp or protocols"),
    ({"name": "ssh", "tcp": [22]}, r"ssh: give either network"),
    ({"name": "ssh", "network": "internal", "vips": ["public"], "tcp": [22]},
     r"ssh: give either network"),
    ({"name": "ssh", "network": "storage", "tcp": [22]}, r"network 'storage' is not in"),
    ({"name": "api", "vips": ["admin"], "tcp": [35357]}, r"api: no VIP named 'admin'"),
    ({"name": "ssh", "network": "internal", "tcp": [0]}, r"tcp port 0 is not a port"),
    ({"name": "ssh", "network": "internal", "tcp": [65536]}, r"tcp port 65536"),
    ({"name": "x", "network": "internal", "udp": ["9-3"]}, r"udp port '9-3'"),
    ({"name": "x", "network": "internal", "tcp": ["22; drop"]}, r"tcp port '22; drop'"),
    ({"name": 'a" accept', "network": "internal", "tcp": [22]}, r"is not a word"),
    ({"name": "x", "network": "external", "protocols": ["vrrp }"]}, r"x: protocol 'vrrp }'"),
    ({"name": "x", "network": "external", "tcp": [1], "protocols": ["vrrp"]},
     r"protocols go in an entry of their own"),
])
def test_firewall_bad_entries_are_refused_by_name(entry, message):
    with pytest.raises(AnsibleFilterError, match=message):
        ha_cluster.firewall_rules([entry], [], VIPS, NETS, ADDRS)


def test_port_range_reads_a_port_or_a_range():
    assert ha_cluster.port_range(5405) == range(5405, 5406)
    assert ha_cluster.port_range("35672-35682") == range(35672, 35683)
    with pytest.raises(ValueError):
        ha_cluster.port_range("9-3")


def test_swift_devices_one_zone_per_host_in_order():
    hosts = [{"ha_addresses": {"internal": f"198.51.100.1{i}"}} for i in range(3)]
    devs = ha_cluster.swift_devices(hosts, "internal", "6200", "d1")
    assert [(d["ip"], d["zone"], d["port"]) for d in devs] == [
        ("198.51.100.10", 1, 6200), ("198.51.100.11", 2, 6200), ("198.51.100.12", 3, 6200)]
    assert {d["device"] for d in devs} == {"d1"}
