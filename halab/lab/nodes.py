"""Node lifecycle: each node is an overlay over the cached image, booted with
systemd-nspawn inside the lab's network namespace. The overlay's upper directory is
the node's disk: it survives kill/stop/start and goes with `halab down`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from halab.errors import HalabError
from halab.lab import cgroup, image, net, poll, topology
from halab.lab.run import run

BOOT_TIMEOUT = 90
# A node the cluster fences while it boots is off for the switch's POST delay (15 s),
# longer while the switch still tears down its last power-off (seen: 30.6 s off, the
# teardown taking 20 s under load), then boots again: only a node off longer than
# this while we wait for it has failed.
OFF_GRACE = 60.0
STOP_TIMEOUT = 90


class NodeDir:
    def __init__(self, node: topology.Node):
        self.node = node
        self.path = topology.state_dir() / "nodes" / node.name

    upper = property(lambda self: self.path / "upper")
    work = property(lambda self: self.path / "work")
    root = property(lambda self: self.path / "root")
    pidfile = property(lambda self: self.path / "nspawn.pid")
    console = property(lambda self: self.path / "console.log")
    imagefile = property(lambda self: self.path / "image")
    initfile = property(lambda self: self.path / "init.pid")


def _mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == target for line in fh)


def nspawn_pid(node: topology.Node) -> int | None:
    """The node's nspawn process, if it is ours and alive."""
    d = NodeDir(node)
    try:
        pid = int(d.pidfile.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if b"systemd-nspawn" in cmdline[0] and f"--machine={node.name}".encode() in cmdline:
        return pid
    return None


def _starttime(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pidns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _record_init(node: topology.Node, nspawn: int) -> None:
    """Remember the node's init (nspawn's child) with its start time and PID namespace:
    the node's processes are those of that namespace, whatever happened to nspawn."""
    def child() -> int | None:
        try:
            kids = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    # nspawn forks the init before it enters the new PID namespace: wait until it has.
    def entered() -> bool:
        pid = child()
        return pid is not None and _pidns(pid) not in (None, _pidns(nspawn))

    if not poll.until(entered, 10, interval=0.05):
        return
    pid = child()
    NodeDir(node).initfile.write_text(f"{pid} {_starttime(pid)} {_pidns(pid)}\n")


def _init_record(node: topology.Node) -> tuple[int, str, str | None] | None:
    try:
        fields = NodeDir(node).initfile.read_text().split()
        return int(fields[0]), fields[1], fields[2] if len(fields) > 2 else None
    except (OSError, ValueError, IndexError):
        return None


def node_inits(node: topology.Node) -> list[int]:
    """The node's init if it still runs (same PID and start time as recorded)."""
    rec = _init_record(node)
    if rec is None:
        return []
    pid, started, _ = rec
    return [pid] if _pid_alive(pid) and _starttime(pid) == started else []


def node_processes(node: topology.Node) -> list[int]:
    """Every live process of the node: its recorded init and whatever else runs in its
    PID namespace (started no earlier than the init: a namespace id can be reused)."""
    rec = _init_record(node)
    if rec is None:
        return []
    init, started, ns = rec
    found = node_inits(node)
    if ns is None:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == init:
            continue
        pid = int(entry)
        if _pidns(pid) == ns and _pid_alive(pid) and int(_starttime(pid) or 0) >= int(started):
            found.append(pid)
    return found


def is_running(node: topology.Node) -> bool:
    """Whether the node is on: any of its processes runs. Judged by the node's own
    processes, not by nspawn: an init that outlived a killed nspawn is a running node,
    and an nspawn still tearing down a dead node's mounts is not."""
    if _init_record(node) is None:
        return nspawn_pid(node) is not None
    # A live init answers it; only a dead one needs the scan of /proc for stragglers.
    return bool(node_inits(node) or node_processes(node))


def _pid_alive(pid: int) -> bool:
    """A zombie counts as dead: its reaper may be a process we do not control."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _prepare(node: topology.Node, rootfs: Path) -> None:
    """Mount the node's overlay and, on first creation, write its identity."""
    d = NodeDir(node)
    key = image.image_key()
    if d.imagefile.exists() and d.imagefile.read_text().strip() != key:
        raise HalabError(
            f"{node.name}: its disk was made from another image; run `halab down` first"
        )
    fresh = not d.upper.exists()
    topology.private_dir(d.path)
    for p in (d.upper, d.work, d.root):
        p.mkdir(parents=True, exist_ok=True)
    d.imagefile.write_text(key + "\n")
    if not _mounted(d.root):
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={rootfs},upperdir={d.upper},workdir={d.work}", str(d.root)])
    if fresh:
        _write_identity(node, d.root)


def _write_identity(node: topology.Node, root: Path) -> None:
    (root / "etc/hostname").write_text(node.name + "\n")
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    netdir = root / "etc/systemd/network"
    netdir.mkdir(parents=True, exist_ok=True)
    for n in topology.NETWORKS:
        (netdir / f"10-{n.node_if}.network").write_text(
            # Static addresses, there with or without carrier: a node booting while
            # partitioned still starts corosync, as a real one with its cable out does.
            f"[Match]\nName={n.node_if}\n\n[Link]\nRequiredForOnline=no-carrier\n\n"
            f"[Network]\nAddress={node.address(n.name)}/{n.prefixlen}\n"
            "ConfigureWithoutCarrier=yes\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        )
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = ssh / "authorized_keys"
    keys.write_text(Path(str(topology.ssh_key()) + ".pub").read_text())
    keys.chmod(0o600)


# The nspawn processes this process started: kept so they are reaped (the fence
# daemon lives long and boots nodes again and again).
_children: dict[str, subprocess.Popen] = {}


def _clear_stale_links(node: topology.Node) -> None:
    """A killed node's veths go only when the kernel has torn down its network
    namespace, which lags under load; nspawn cannot create them while they exist."""
    def gone() -> bool:
        return not any(net.link_exists(node.veth(n), netns=True) for n in topology.NETWORKS)

    if poll.until(gone, 10, interval=0.5):
        return
    for n in topology.NETWORKS:
        if net.link_exists(node.veth(n), netns=True):
            run(["ip", "-n", topology.NETNS, "link", "delete", node.veth(n)], check=False)
    if not poll.until(gone, 10, interval=0.5):
        raise HalabError(f"{node.name}: its old network links do not go away")


def _boot(node: topology.Node) -> None:
    d = NodeDir(node)
    for proc in list(_children.values()):
        proc.poll()
    _clear_stale_links(node)
    cmd = [
        "nsenter", f"--net={net.NETNS_PATH}",
        "systemd-nspawn", "--boot", "--register=no", "--keep-unit",
        f"--machine={node.name}", f"--directory={d.root}",
        "--console=read-only", "--link-journal=no", "--resolv-conf=off", "--timezone=off",
    ]
    for n in topology.NETWORKS:
        cmd.append(f"--network-veth-extra={node.veth(n)}:{n.node_if}")
    with d.console.open("a") as log:
        log.write(f"--- boot {time.strftime('%F %T')}\n")
        log.flush()
        proc = subprocess.Popen(cgroup.wrap(node, cmd), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    _children[node.name] = proc
    d.pidfile.write_text(f"{proc.pid}\n")
    _record_init(node, proc.pid)

    def veths_ready() -> bool:
        if proc.poll() is not None:
            raise HalabError(f"{node.name}: systemd-nspawn exited at boot (log: {d.console})")
        return all(net.link_exists(node.veth(n), netns=True) for n in topology.NETWORKS)

    if not poll.until(veths_ready, 30):
        raise HalabError(f"{node.name}: no network links after 30s (log: {d.console})")
    net.attach(node)


def wait_ssh(node: topology.Node, timeout: float = BOOT_TIMEOUT) -> None:
    d = NodeDir(node)

    off_since: float | None = None

    def ready() -> bool:
        nonlocal off_since
        if not is_running(node):
            off_since = off_since or time.monotonic()
            if time.monotonic() - off_since > OFF_GRACE:
                raise HalabError(f"{node.name}: stopped while booting (log: {d.console})")
            return False
        off_since = None
        try:
            with socket.create_connection((node.ssh_address, 22), timeout=1):
                pass
            return ssh(node, ["true"], timeout=10, check=False).returncode == 0
        except (OSError, HalabError):  # not up yet, or powered off under the command
            return False

    if not poll.until(ready, timeout, interval=0.5):
        raise HalabError(f"{node.name}: no ssh after {timeout}s (log: {d.console})")


def start(node: topology.Node, rootfs: Path | None = None, wait: bool = True) -> None:
    if is_running(node):
        raise HalabError(f"{node.name} is already running")
    teardown(node)  # what is left of its last power-off
    _reap_orphans(node)
    _prepare(node, rootfs or image.rootfs())
    _boot(node)
    if wait:
        wait_ssh(node)


def _after_exit(node: topology.Node) -> None:
    d = NodeDir(node)
    d.pidfile.unlink(missing_ok=True)
    d.initfile.unlink(missing_ok=True)
    if _mounted(d.root):
        run(["umount", str(d.root)])
    cgroup.remove(node)


def _reap_orphans(node: topology.Node) -> None:
    """Leftovers of a lab whose nspawn was killed from outside: end its init, unmount."""
    pids = node_inits(node)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    poll.until(lambda: not any(_pid_alive(p) for p in pids), 15)
    if nspawn_pid(node) is None:
        _after_exit(node)


OFF_TIMEOUT = 10


def power_off(node: topology.Node) -> float:
    """Power loss: pull the node's cables, then SIGKILL its init (the kernel then kills
    its whole PID namespace). Cables first: the kernel closes a killed process's
    sockets, and a FIN or RST that got out would tell the peers what a real power loss
    never tells them; the veths also go because the kernel's teardown of a dead network
    namespace lags, and until then it would still answer ARP. Returns once no process
    of the node is left, with the seconds that took; nspawn's exit and the unmount are
    `teardown`'s."""
    t = time.monotonic()
    inits = node_inits(node)
    if not inits and _init_record(node) is None and (pid := nspawn_pid(node)):
        inits = [pid]  # no init recorded: nspawn takes its container with it
    for n in topology.NETWORKS:
        if net.link_exists(node.veth(n), netns=True):
            run(["ip", "-n", topology.NETNS, "link", "delete", node.veth(n)], check=False)
    for pid in inits:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if not poll.until(lambda: not is_running(node), OFF_TIMEOUT, interval=0.02):
        raise HalabError(f"{node.name}: processes {node_processes(node)} still run "
                         f"{OFF_TIMEOUT}s after its init was killed")
    return time.monotonic() - t


def teardown(node: topology.Node, timeout: float = 30) -> None:
    """After a power-off: wait for nspawn to exit (SIGKILL it past `timeout`), unmount."""
    pid = nspawn_pid(node)
    if pid is not None and not poll.until(lambda: not _pid_alive(pid), timeout):
        os.kill(pid, signal.SIGKILL)
        poll.until(lambda: not _pid_alive(pid), 5)
    if nspawn_pid(node) is None and not node_inits(node):
        _after_exit(node)


def kill(node: topology.Node) -> None:
    """Power loss, then the host's cleanup."""
    if not is_running(node):
        raise HalabError(f"{node.name} is not running (nothing to kill)")
    power_off(node)
    teardown(node)


def stop(node: topology.Node, timeout: float = STOP_TIMEOUT) -> None:
    """Clean shutdown: nspawn passes SIGTERM on to the node as a poweroff request."""
    pid = nspawn_pid(node)
    if pid is None:
        raise HalabError(f"{node.name} is not running (nothing to stop)")
    os.kill(pid, signal.SIGTERM)
    if not poll.until(lambda: not _pid_alive(pid), timeout, interval=0.5):
        raise HalabError(
            f"{node.name}: no clean shutdown within {timeout:.0f}s; `halab kill {node.name}` "
            f"cuts the power (log: {NodeDir(node).console})"
        )
    _after_exit(node)


def destroy(node: topology.Node) -> None:
    if is_running(node):
        kill(node)
    teardown(node)
    _reap_orphans(node)
    d = NodeDir(node)
    if d.path.exists():
        run(["rm", "-rf", "--one-file-system", str(d.path)])


def ssh_command(node: topology.Node, tty: bool = False) -> list[str]:
    key = topology.ssh_key()
    cmd = ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
           "-o", "ConnectTimeout=5", "-o", "BatchMode=yes"]
    if tty:
        cmd.append("-t")
    return [*cmd, f"root@{node.ssh_address}"]


def ssh(node: topology.Node, command: list[str], timeout: float = 60,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([*ssh_command(node), *command], timeout=timeout, check=check)
