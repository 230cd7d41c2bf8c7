"""The lab network: a namespace of its own holding one bridge per lab network, and one
veth leg per network for the host (its .1 address), like a VM host's host-only network.
Nodes have no default route: lab traffic never leaves this machine."""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path

from halab.errors import HalabError
from halab.lab import topology
from halab.lab.run import run

NETNS_PATH = Path("/run/netns") / topology.NETNS


def _peer(net: topology.Network) -> str:
    return f"hx-{net.name[:3]}"  # the host leg's other end, on the bridge


def link_exists(name: str, netns: bool = False) -> bool:
    cmd = ["ip", "-n", topology.NETNS] if netns else ["ip"]
    return run([*cmd, "link", "show", "dev", name], check=False).returncode == 0


def netns_alive() -> bool:
    if not NETNS_PATH.exists():
        return False
    return run(["ip", "-n", topology.NETNS, "link", "show", "lo"], check=False).returncode == 0


# Route types `ip route` prints before the destination (unicast is left out).
ROUTE_TYPES = {"unicast", "local", "broadcast", "multicast", "throw", "unreachable",
               "prohibit", "blackhole", "nat", "anycast"}


def parse_route(line: str) -> tuple[str, str, str]:
    """(type, destination, device) of one `ip -o -4 route show` line."""
    words = line.split()
    kind = words.pop(0) if words and words[0] in ROUTE_TYPES else "unicast"
    dev = words[words.index("dev") + 1] if "dev" in words[:-1] else ""
    return kind, (words[0] if words else ""), dev


def check_no_overlap() -> None:
    """Refuse to route a lab subnet to the lab when something real lives in it."""
    subnets = [ipaddress.ip_network(n.cidr) for n in topology.NETWORKS]
    ours = {n.host_if for n in topology.NETWORKS}
    for line in run(["ip", "-o", "-4", "route", "show"]).stdout.splitlines():
        kind, dest, dev = parse_route(line)
        if dest in ("default", "") or dev in ours:
            continue
        route = ipaddress.ip_network(dest, strict=False)
        if any(route.overlaps(s) for s in subnets):
            where = f"dev {dev}" if dev else kind
            raise HalabError(f"lab network overlaps the host route {dest} ({where}): "
                             "pick other lab subnets or remove the route")
    for name in topology.RESERVED_NAMES:
        try:
            infos = socket.getaddrinfo(name, None, socket.AF_INET)
        except OSError:
            continue
        for info in infos:
            addr = ipaddress.ip_address(info[4][0])
            if any(addr in s for s in subnets):
                raise HalabError(f"lab network would hide {name} ({addr}): pick other subnets")


def ensure() -> None:
    check_no_overlap()
    if NETNS_PATH.exists() and not netns_alive():
        run(["ip", "netns", "delete", topology.NETNS], check=False)  # stale file, no namespace
    if not NETNS_PATH.exists():
        run(["ip", "netns", "add", topology.NETNS])
    ns = ["ip", "-n", topology.NETNS]
    run([*ns, "link", "set", "lo", "up"])
    for net in topology.NETWORKS:
        if not link_exists(net.bridge, netns=True):
            run([*ns, "link", "add", net.bridge, "type", "bridge"])
        run([*ns, "link", "set", net.bridge, "up"])
        if not link_exists(net.host_if):
            if link_exists(_peer(net), netns=True):
                run([*ns, "link", "delete", _peer(net)])
            run(["ip", "link", "add", net.host_if, "type", "veth",
                 "peer", "name", _peer(net), "netns", topology.NETNS])
        run([*ns, "link", "set", _peer(net), "master", net.bridge, "up"])
        addr = f"{net.host_address}/{net.prefixlen}"
        shown = run(["ip", "-o", "addr", "show", "dev", net.host_if]).stdout
        if f" {addr} " not in shown:
            run(["ip", "addr", "add", addr, "dev", net.host_if])
        run(["ip", "link", "set", net.host_if, "up"])


def attach(node: topology.Node) -> None:
    """Put a booted node's veths on their bridges (nspawn creates them unattached);
    an isolated node's stay down."""
    state = "down" if isolation_flag(node).exists() else "up"
    for net in topology.NETWORKS:
        run(["ip", "-n", topology.NETNS, "link", "set", node.veth(net),
             "master", net.bridge, state])


def isolation_flag(node: topology.Node) -> Path:
    """Kept on disk so a partitioned node stays cut off when it reboots (fencing)."""
    return topology.state_dir() / "nodes" / node.name / "isolated"


def set_links(node: topology.Node, up: bool) -> None:
    flag = isolation_flag(node)
    if up:
        flag.unlink(missing_ok=True)
    elif flag.parent.exists():
        flag.touch()
    for net in topology.NETWORKS:
        run(["ip", "-n", topology.NETNS, "link", "set", node.veth(net), "up" if up else "down"])


def isolated(node: topology.Node) -> bool:
    """True when any of the node's legs is administratively down (a partition)."""
    for net in topology.NETWORKS:
        out = run(["ip", "-n", topology.NETNS, "-o", "link", "show", "dev", node.veth(net)],
                  check=False).stdout
        flags = re.search(r"<([^>]*)>", out)
        if flags and "UP" not in flags.group(1).split(","):
            return True
    return False


def teardown() -> None:
    for net in topology.NETWORKS:
        if link_exists(net.host_if):
            run(["ip", "link", "delete", net.host_if])
    if NETNS_PATH.exists():
        run(["ip", "netns", "delete", topology.NETNS])
