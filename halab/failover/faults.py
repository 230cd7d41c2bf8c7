"""Fault backends: how the catalogue powers a node off and on, cuts it off the
network and reads the VIPs it holds. Two implementations of one small interface:

- `LabFaults`: the nspawn lab's own primitives (kill the node's processes, down its
  veths, read its addresses through its network namespace);
- `RemoteFaults`: only what a real cluster offers: the node's fence device driven from
  this machine with the inventory's fence options, an nftables table on the victim that
  drops everything but this machine's ssh (removed again by a timer on the node itself,
  so a lost controller never leaves a node cut off), and ssh for the rest.

Commands on the nodes go through halab.cluster.remote for both."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from halab.cluster.declared import ROOT, Declared
from halab.cluster.remote import Host, hosts
from halab.errors import HalabError
from halab.lab import poll

PARTITION_TABLE = "halab_partition"
PARTITION_LIMIT = 600  # seconds: the node removes the partition itself after this
AGENT_TIMEOUT = 120  # seconds for one fence agent call (it waits for the power state)
HEAL_BOOT = 180  # seconds for a fenced node's sshd to answer again after its reboot
HEAL_RETRY = 60  # seconds of retrying the removal: sshd answers before logins work
# A node's addresses as read (`ip -4 -o addr show`), with when they were read.
Sample = tuple[float, str]


class FaultError(HalabError):
    pass


class Faults:
    """What every backend offers; `kind` names it in reports."""

    kind = ""

    def __init__(self, inventory: Declared):
        self.inventory = inventory
        self.hosts: dict[str, Host] = hosts(inventory)

    def sh(self, name: str, command: str, timeout: float = 60,
           check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.hosts[name].run(command, timeout=timeout, check=check)

    def reachable(self, name: str) -> bool:
        """The node runs and is not cut off: its view of the cluster is the cluster's."""
        raise NotImplementedError

    def powered(self, name: str) -> bool:
        raise NotImplementedError

    def power_off(self, name: str) -> float:
        """Power the node off; returns when the fault took effect (epoch seconds): the
        measurements count from there, not from when the command was started."""
        raise NotImplementedError

    def power_on(self, name: str) -> None:
        raise NotImplementedError

    def isolate(self, name: str) -> float:
        """Cut the node off; returns when it took effect, as power_off."""
        raise NotImplementedError

    def heal(self, name: str) -> None:
        raise NotImplementedError

    def addresses(self, name: str) -> str | None:
        """`ip -4 -o addr show` inside the node; None when it cannot be read."""
        raise NotImplementedError

    @contextlib.contextmanager
    def address_feed(self) -> Iterator[Callable[[str], Sample | None]]:
        """For sampling every ~100 ms: a function node -> (when read, its addresses)."""
        def now(name: str) -> Sample | None:
            t = time.time()
            text = self.addresses(name)
            return None if text is None else (t, text)
        yield now

    def records(self) -> str:
        """The power switch's own log where there is one (the lab's), for the timeline."""
        return ""

    def plan(self, name: str, kind: str) -> str:
        """What a fault of `kind` does to node `name`, in words, for the safety check."""
        return kind


class LabFaults(Faults):
    """The nspawn lab: faults made by the host that runs the nodes."""

    kind = "lab"

    def _node(self, name: str):
        from halab.lab import topology
        return topology.node(name)

    def reachable(self, name: str) -> bool:
        from halab.lab import net, nodes
        node = self._node(name)
        return nodes.is_running(node) and not net.isolated(node)

    def powered(self, name: str) -> bool:
        from halab.lab import nodes
        return nodes.is_running(self._node(name))

    def _op(self, action: str, name: str) -> float:
        """A lab operation on a node, holding the lab's lock as the CLI does; the
        operation's first step is the fault itself, so it takes effect when it starts."""
        from halab.lab import lock, ops
        try:
            with lock.held():
                started = time.time()
                getattr(ops, action)(self._node(name))
                return started
        except HalabError as exc:
            raise FaultError(f"{action} {name}: {exc}") from exc

    def power_off(self, name: str) -> float:
        return self._op("kill", name)

    def power_on(self, name: str) -> None:
        self._op("start", name)

    def isolate(self, name: str) -> float:
        return self._op("isolate", name)

    def heal(self, name: str) -> None:
        self._op("heal", name)

    def addresses(self, name: str) -> str | None:
        # Through the node's network namespace: works while it is cut off.
        from halab.lab import nodes
        inits = nodes.node_inits(self._node(name))
        if not inits:
            return None
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["nsenter", f"--target={inits[0]}", "--net",
                                   "ip", "-4", "-o", "addr", "show"], capture_output=True,
                                  text=True, timeout=5, check=False).stdout
        return None

    def records(self) -> str:
        from halab.lab import fenced
        try:
            return fenced.log_path().read_text(errors="replace")
        except OSError:
            return ""

    def plan(self, name: str, kind: str) -> str:
        return {"power": f"pull the cables of {name} and kill its processes (the lab's "
                         "power loss), boot it again",
                "partition": f"down the veths of {name} in the lab namespace, up again",
                }.get(kind, kind)


def fence_agent_input(options: dict) -> str:
    """A fence agent's options as it reads them on stdin (`name=value` lines): nothing
    of them, a password script's path included, shows in any process's arguments."""
    return "".join(f"{k}={v}\n" for k, v in options.items())


class RemoteFaults(Faults):
    """Any cluster: fence devices, nftables and ssh."""

    kind = "remote"

    def __init__(self, inventory: Declared):
        super().__init__(inventory)
        self.cut: set[str] = set()
        shared = inventory.shared
        self.fencing = dict(shared.get("ha_fencing") or {})
        self.override = dict(shared.get("ha_failover_fence") or {})

    # ---- power, through the node's fence device ----------------------------------

    def fence_options(self, name: str) -> dict:
        """The agent's options for node `name`: the inventory's shared fence options, the
        host's own, then what this machine needs instead (ha_failover_fence: a key or
        password script readable here). Pacemaker's own options are left out."""
        if not self.fencing:
            raise FaultError("power faults on this cluster need its fence devices: the "
                             "inventory declares no ha_fencing")
        own = self.inventory[name].get("ha_fence_options") or {}
        options = {**self.fencing.get("options", {}), **own,
                   **self.override.get("options", {})}
        options = {k: v for k, v in options.items() if not k.startswith("pcmk_")}
        if "port" not in options and "plug" not in options:
            options["plug"] = name  # Pacemaker passes the node name the same way
        return options

    def agent(self) -> str:
        agent = str(self.override.get("agent") or self.fencing.get("agent") or "")
        path = Path(agent) if "/" in agent else None
        if path is not None and not path.is_absolute():
            path = ROOT / path
        return str(path) if path else agent

    def _fence(self, name: str, action: str) -> subprocess.CompletedProcess[str]:
        options = {**self.fence_options(name), "action": action}
        try:
            return subprocess.run([self.agent()], input=fence_agent_input(options),
                                  capture_output=True, text=True, timeout=AGENT_TIMEOUT,
                                  check=False)
        except FileNotFoundError as exc:
            raise FaultError(f"fence agent {self.agent()} not found on this machine") from exc
        except subprocess.TimeoutExpired as exc:
            raise FaultError(f"{self.agent()} {action} {name}: no answer in "
                             f"{AGENT_TIMEOUT}s") from exc

    def powered(self, name: str) -> bool:
        # The fence-agents convention: status exits 0 for on, 2 for off.
        proc = self._fence(name, "status")
        if proc.returncode not in (0, 2):
            raise FaultError(f"{self.agent()} status {name}: exit {proc.returncode}: "
                             f"{_last_line(proc)}")
        return proc.returncode == 0

    def _power(self, name: str, action: str) -> None:
        proc = self._fence(name, action)
        if proc.returncode != 0:
            raise FaultError(f"{self.agent()} {action} {name}: exit {proc.returncode}: "
                             f"{_last_line(proc)}")

    def power_off(self, name: str) -> float:
        # The agent starts, asks for the state, then switches off and waits until the
        # device reports off: the node is off when it returns, and not long before
        # (its start alone took 5 s on a loaded host).
        self._power(name, "off")
        return time.time()

    def power_on(self, name: str) -> None:
        self._power(name, "on")

    def reachable(self, name: str) -> bool:
        return name not in self.cut and self.hosts[name].answers()

    # ---- partition: nftables on the victim, with its own way back -------------------

    def isolate(self, name: str) -> float:
        """Drop every packet in and out of the node but this machine's ssh session
        traffic. The removal is scheduled on the node before the rules load."""
        script = f"""set -e
c=${{SSH_CLIENT%% *}}
case $c in *:*) fam=ip6 ;; *) fam=ip ;; esac
systemd-run --quiet --collect --unit=halab-partition-heal-$$ --on-active={PARTITION_LIMIT} \\
  /usr/sbin/nft delete table inet {PARTITION_TABLE}
nft -f - <<EOF
table inet {PARTITION_TABLE} {{
  chain input {{
    type filter hook input priority -200; policy drop;
    iif lo accept
    $fam saddr $c tcp dport 22 accept
  }}
  chain output {{
    type filter hook output priority -200; policy drop;
    oif lo accept
    $fam daddr $c tcp sport 22 accept
  }}
}}
EOF
"""
        self.cut.add(name)
        try:
            self.sh(name, script, timeout=30)
        except HalabError as exc:
            raise FaultError(f"partition of {name}: {exc}") from exc
        return time.time()  # the rules load last; ssh's own start is not the fault

    def heal(self, name: str) -> None:
        """Remove the partition (gone already if the node was fenced and rebooted). A
        fenced node may still be booting: wait for its sshd, then retry the removal."""
        poll.until(self.hosts[name].answers, HEAL_BOOT,
                   f"{name}'s sshd, to remove the partition", interval=1,
                   error=FaultError, progress=True)
        last = ["none"]

        def removed() -> bool:
            try:
                self.sh(name, f"nft delete table inet {PARTITION_TABLE} 2>/dev/null; "
                              "systemctl stop 'halab-partition-heal-*.timer' 2>/dev/null; "
                              "true", timeout=30)
            except HalabError as exc:
                last[0] = str(exc)
                return False
            return True

        poll.until(removed, HEAL_RETRY,
                   lambda: f"the partition removed from {name} (last error: {last[0]})",
                   interval=2, error=FaultError, progress=True)
        self.cut.discard(name)

    # ---- VIPs ---------------------------------------------------------------------

    def addresses(self, name: str) -> str | None:
        if not self.hosts[name].answers():
            return None
        proc = self.sh(name, "ip -4 -o addr show", timeout=10, check=False)
        return proc.stdout if proc.returncode == 0 else None

    @contextlib.contextmanager
    def address_feed(self) -> Iterator[Callable[[str], Sample | None]]:
        feeds = {name: _Feed(host) for name, host in self.hosts.items()}
        for f in feeds.values():
            f.start()
        try:
            yield lambda name: feeds[name].latest()
        finally:
            for f in feeds.values():
                f.stop()

    def plan(self, name: str, kind: str) -> str:
        if kind == "power":
            return (f"power {name} OFF through its fence device ({self.agent()}), later "
                    "on again (if fencing has not already)")
        if kind == "partition":
            return (f"load nftables table inet {PARTITION_TABLE} on {name}: drops all "
                    f"but this machine's ssh; removed by the restore, or by the node "
                    f"itself after {PARTITION_LIMIT}s")
        return kind


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1] if lines else "no output"


class _Feed:
    """One ssh session per node printing its addresses every 0.1 s: sampling by a new
    ssh each time would load the machine it measures. Reconnects while the node is
    away; a sample that arrived over a second ago counts as unknown. Each sample carries
    the node's own time of reading: a powered-off node's last sample was read before
    it died, however late it is judged stale."""

    ROUNDS = 9000  # 15 minutes of samples per session, then a new session
    STALE = 1.0

    def __init__(self, host: Host):
        self.host = host
        self._latest: tuple[float, Sample] | None = None  # (arrived, sample)
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def latest(self) -> Sample | None:
        got = self._latest
        return got[1] if got and time.monotonic() - got[0] < self.STALE else None

    def _run(self) -> None:
        loop = (f"i=0; while [ $i -lt {self.ROUNDS} ]; do date +@@%s.%N; ip -4 -o addr show; "
                "echo @@; sleep 0.1; i=$((i+1)); done")
        while not self._stop.is_set():
            if not self.host.answers():
                self._stop.wait(0.5)
                continue
            with contextlib.suppress(OSError):
                self._proc = subprocess.Popen(self.host.command(loop), stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL,
                                              stdin=subprocess.DEVNULL, text=True)
                lines: list[str] = []
                read_at = None
                for line in self._proc.stdout:
                    if not line.startswith("@@"):
                        lines.append(line)
                    elif line.strip() != "@@":  # the node's clock as it reads
                        with contextlib.suppress(ValueError):
                            read_at = float(line[2:])
                        lines = []
                    else:
                        arrived = time.monotonic()
                        self._latest = (arrived, (read_at or time.time(), "".join(lines)))
                        lines, read_at = [], None
                self._proc.wait()
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        self._thread.join(10)


BACKENDS = {"lab": LabFaults, "remote": RemoteFaults}


def for_inventory(inventory: Declared, kind: str | None = None) -> Faults:
    """The backend named, else the lab's for the lab's inventory and remote for others."""
    if kind is None:
        kind = "lab" if is_lab(inventory) else "remote"
    if kind == "lab" and not is_lab(inventory):
        raise HalabError("lab faults work only on the lab's own inventory; use remote")
    return BACKENDS[kind](inventory)


def is_lab(inventory: Declared) -> bool:
    from halab.lab import topology
    return sorted(inventory) == sorted(n.name for n in topology.NODES) and all(
        inventory[n.name].get("ansible_host") == n.ssh_address for n in topology.NODES)
