"""Filters that turn the inventory's VIP list into Pacemaker data, so a VIP is declared
once (name, network, address) and gets its resource and constraints the TripleO way."""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
from typing import Any

from ansible.errors import AnsibleFilterError


def vip_resources(vips: list[dict], networks: dict, monitor: str = "10s") -> list[dict]:
    """One ocf:heartbeat:IPaddr2 primitive `ip-<address>` per VIP, nic set explicitly.
    The VIPs are checked by playbooks/preflight.yml (inside a declared network)."""
    out = []
    for vip in vips:
        out.append({
            "id": f"ip-{vip['address']}",
            "agent": "ocf:heartbeat:IPaddr2",
            "options": {
                "ip": vip["address"],
                "cidr_netmask": "32",
                "nic": networks[vip["network"]]["interface"],
            },
            "meta": {"resource-stickiness": "INFINITY"},
            "ops": [{"action": "monitor", "interval": monitor}],
        })
    return out


def vip_constraints(vips: list[dict], clone: str = "haproxy-clone") -> dict[str, list]:
    """Start the VIP, then HAProxy (Optional); keep the VIP where HAProxy runs. Starts
    only (not symmetrical): a stopping node's VIP leaves without waiting for its HAProxy
    to stop, which can take seconds, and a transition aborted meanwhile (a Redis stop
    changes master scores) would hold the VIP back until every stop in flight ended."""
    return {
        "order": [{"first": f"ip-{v['address']}", "then": clone, "kind": "Optional",
                   "symmetrical": False} for v in vips],
        "colocation": [{"resource": f"ip-{v['address']}", "with": clone, "score": "INFINITY"}
                       for v in vips],
    }


def stop_orders(orders: list[dict], through: list[str] = ()) -> list[dict]:
    """The start orders' reverse for stops only, Optional: a service stops before what it
    needs (`first` of each start order, demoted if it was promoted) and before what it
    reaches that through (`through`: HAProxy, the VIP), on a node that stops them all
    (pcs cluster stop, standby). Optional, so a stop that cannot run (a lost node without
    quorum) holds nothing back; a lone stop of what is needed waits for nothing."""
    out: list[dict] = []
    for order in orders:
        if order.get("then_action", "start") != "start":
            raise AnsibleFilterError(f"stop_orders: {order} is not a start order")
        needed = [(order["first"], "demote" if order.get("first_action") == "promote"
                   else "stop")]
        for first, action in needed + [(t, "stop") for t in through]:
            entry = {"first": order["then"], "first_action": "stop", "then": first,
                     "then_action": action, "kind": "Optional", "symmetrical": False}
            if entry not in out:
                out.append(entry)
    return out


def role_locations(resources: dict[str, str]) -> list[dict]:
    """resource -> role: run only on nodes whose <role>-role attribute is true."""
    return [{"resource": rsc, "rule": f"{role}-role eq true", "score": "0",
             "resource_discovery": "exclusive"} for rsc, role in resources.items()]


def merge_constraints(*parts: dict[str, list]) -> dict[str, list]:
    out: dict[str, list] = {}
    for part in parts:
        for kind, items in (part or {}).items():
            out.setdefault(kind, []).extend(items)
    return out


def vip_address(vips: list[dict], name: str) -> str:
    for vip in vips:
        if vip.get("name") == name:
            return vip["address"]
    raise AnsibleFilterError(f"ha_vips has no VIP named {name!r}")


def stonith_devices(hosts: list[str], fencing: dict, hostvars: Any) -> list[dict]:
    """One fence device `fence-<host>` per controller (as TripleO made one IPMI device per
    node): the shared options, the host's own ha_fence_options, pcmk_host_list=<host>.
    The options hold no password (roles/fencing/tasks/validate.yml refuses one): the
    agent reads ha_fencing.password_file through password_script."""
    if not fencing:
        return []
    devices = []
    for host in hosts:
        own = dict(hostvars[host].get("ha_fence_options") or {})
        options = {**fencing.get("options", {}), **own, "pcmk_host_list": host}
        if fencing.get("password_file"):
            options["password_script"] = f"cat {shlex.quote(fencing['password_file'])}"
        devices.append({
            "id": f"fence-{host}",
            "agent": fencing["agent"],
            "options": {k: str(v) for k, v in options.items()},
            "ops": [{"action": "monitor", "interval": fencing.get("monitor", "60s")}],
        })
    return devices


def stonith_locations(hosts: list[str], fencing: dict) -> dict[str, list]:
    """A node never runs the device that fences it."""
    if not fencing:
        return {}
    return {"location": [{"resource": f"fence-{h}", "node": h, "score": "-INFINITY"}
                         for h in hosts]}


def duplicates(values: list) -> list:
    """The values that occur more than once, each once, in first-seen order (for the
    validation messages: which address or name is declared twice)."""
    seen, twice = set(), []
    for v in values:
        if v in seen and v not in twice:
            twice.append(v)
        seen.add(v)
    return twice


def port_range(port: int | str) -> range:
    """The ports of a firewall entry's port: "5405" or "35672-35682" (ValueError if it
    is neither a port, 1-65535, nor a rising range of them)."""
    bounds = str(port).split("-", 1)
    if not all(b.isdigit() and 0 < int(b) < 65536 for b in bounds) or (
            len(bounds) == 2 and int(bounds[0]) >= int(bounds[1])):
        raise ValueError(f"{port!r} is not a port (1-65535) or a range (low-high)")
    return range(int(bounds[0]), int(bounds[-1]) + 1)


def _ports(entry: dict, key: str) -> list[str]:
    out = []
    for port in entry.get(key) or []:
        try:
            port_range(port)
        except ValueError:
            raise AnsibleFilterError(
                f"firewall_services.{entry.get('name')}: {key} port {port!r} is not a port"
                " (1-65535) or a range (low-high)") from None
        out.append(str(port))
    return out


def firewall_rules(services: list[dict], haproxy_services: list[dict], vips: list[dict],
                   networks: dict, addresses: dict) -> list[dict]:
    """What a controller's firewall lets in, one rule per service and network: the
    network's interface, the destination addresses (the node's own on that network, or
    VIPs), TCP and UDP ports, other IP protocols (any destination: VRRP is multicast).
    Each HAProxy service opens its port on its VIPs. A name that does not resolve is an
    error, not a rule that opens nothing."""
    by_vip = {v["name"]: v for v in vips}
    entries = [{"name": s["name"], "vips": s.get("vips") or [], "tcp": [s["port"]]}
               for s in haproxy_services] + list(services)
    rules = []
    for entry in entries:
        name = entry.get("name")
        if not name:
            raise AnsibleFilterError(f"firewall_services: entry {entry!r} has no name")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
            raise AnsibleFilterError(f"firewall_services: name {name!r} is not a word")
        if not any(k in entry for k in ("tcp", "udp", "protocols")):
            raise AnsibleFilterError(f"firewall_services.{name}: no tcp, udp or protocols")
        if ("network" in entry) == ("vips" in entry):
            raise AnsibleFilterError(
                f"firewall_services.{name}: give either network (the node's own address)"
                " or vips")
        tcp, udp = _ports(entry, "tcp"), _ports(entry, "udp")
        protocols = [str(p) for p in entry.get("protocols") or []]
        for proto in protocols:
            if not re.fullmatch(r"[a-z][a-z0-9-]*", proto):
                raise AnsibleFilterError(f"firewall_services.{name}: protocol {proto!r}")
        if protocols and (tcp or udp):
            raise AnsibleFilterError(
                f"firewall_services.{name}: protocols go in an entry of their own (they"
                " match any destination, ports only the listed ones)")
        if not (tcp or udp or protocols):
            continue  # an empty list, e.g. VRRP where no keepalived peer is declared
        targets: dict[str, list[str]] = {}
        if "network" in entry:
            if entry["network"] not in networks or entry["network"] not in addresses:
                raise AnsibleFilterError(
                    f"firewall_services.{name}: network {entry['network']!r} is not in "
                    "ha_networks and ha_addresses")
            targets[entry["network"]] = [addresses[entry["network"]]]
        for vip_name in entry.get("vips") or []:
            if vip_name not in by_vip:
                raise AnsibleFilterError(f"firewall_services.{name}: no VIP named {vip_name!r}")
            targets.setdefault(by_vip[vip_name]["network"], []).append(by_vip[vip_name]["address"])
        for network, daddr in targets.items():
            rules.append({"name": name, "network": network,
                          "interface": networks[network]["interface"],
                          "daddr": [] if protocols else daddr,
                          "tcp": tcp, "udp": udp, "protocols": protocols})
    return rules


def rabbitmq_password_hash(password: str, seed: str = "") -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)).
    The 4-byte salt derives from `seed` and the password so the hash is stable between
    runs (a changed definitions file would mean a needless restart)."""
    salt = hashlib.sha256(f"{seed}:{password}".encode()).digest()[:4]
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def swift_devices(hosts: list[dict], network: str, port: int, device: str) -> list[dict]:
    """One ring device per host (its hostvars), each host its own zone, numbered in
    the given order from 1: three replicas on three zones put a copy on every node."""
    return [{"ip": h["ha_addresses"][network], "port": int(port), "device": device,
             "zone": zone, "region": 1, "weight": 100}
            for zone, h in enumerate(hosts, start=1)]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "vip_resources": vip_resources,
            "vip_constraints": vip_constraints,
            "role_locations": role_locations,
            "stop_orders": stop_orders,
            "merge_constraints": merge_constraints,
            "vip_address": vip_address,
            "rabbitmq_password_hash": rabbitmq_password_hash,
            "stonith_devices": stonith_devices,
            "stonith_locations": stonith_locations,
            "duplicates": duplicates,
            "firewall_rules": firewall_rules,
            "swift_devices": swift_devices,
        }
