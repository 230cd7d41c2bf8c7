"""The lab as a whole: up, down, power and network faults of its nodes."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

from halab.errors import HalabError
from halab.lab import fenced, image, net, nodes, topology
from halab.lab.run import run


def _require_tools() -> None:
    missing = [t for t in ("systemd-nspawn", "nsenter", "ip", "ssh", "ssh-keygen")
               if shutil.which(t) is None]
    if missing:
        raise HalabError(f"missing host tools: {', '.join(missing)} (run `make host-deps`)")


def _ensure_key() -> None:
    key = topology.ssh_key()
    if not key.exists():
        topology.private_dir(key.parent)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "halab", "-f", str(key)])


def up() -> None:
    _require_tools()
    rootfs = image.ensure()
    _ensure_key()
    net.ensure()
    booting = []
    for node in topology.NODES:
        if nodes.is_running(node):
            net.attach(node)
        else:
            print(f"up: booting {node.name}", flush=True)
            nodes.start(node, rootfs, wait=False)
            booting.append(node)
    with ThreadPoolExecutor(max_workers=len(topology.NODES)) as pool:
        for fut in [pool.submit(nodes.wait_ssh, n) for n in booting]:
            fut.result()
    fenced.start()
    for node in topology.NODES:
        print(f"up: {node.name} running, ssh root@{node.ssh_address}", flush=True)
    print(f"up: fencing switch on {fenced.bind_address()}:{fenced.port()}", flush=True)


def down() -> None:
    fenced.stop()
    for node in topology.NODES:
        nodes.destroy(node)
    net.teardown()
    state = topology.state_dir()
    for entry in state.iterdir() if state.exists() else ():
        if entry.name != "lock":
            run(["rm", "-rf", "--one-file-system", str(entry)])


def kill(node: topology.Node) -> None:
    nodes.kill(node)


def stop(node: topology.Node) -> None:
    nodes.stop(node)


def start(node: topology.Node) -> None:
    if not net.netns_alive():
        raise HalabError("the lab is not up: run `halab up`")
    nodes.start(node)


def isolate(node: topology.Node) -> None:
    if not nodes.is_running(node):
        raise HalabError(f"{node.name} is not running")
    net.set_links(node, up=False)


def heal(node: topology.Node | None) -> None:
    """Reconnect; a node that is down (fenced, booting) comes back connected."""
    for n in [node] if node else topology.NODES:
        if nodes.is_running(n):
            net.set_links(n, up=True)
        else:
            net.isolation_flag(n).unlink(missing_ok=True)
