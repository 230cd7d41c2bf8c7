"""The failover catalogue: each scenario starts from a healthy cluster, injects one
real fault, measures what clients and the cluster see while it lasts, restores, and
waits for full health again. The testinfra catalogue asserts on the results; the
failover report aggregates them. One implementation serves both, on any cluster: the
faults come from a backend (halab.failover.faults), the lab's own or remote.

Observation is from this machine: crm_mon over ssh on a surviving node, the VIPs each
node holds (read even while it is cut off), and client workloads through the VIPs
(halab.failover.workloads and probe)."""

from __future__ import annotations

import calendar
import contextlib
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from halab.cluster import crm
from halab.cluster.declared import Declared
from halab.errors import HalabError
from halab.failover.result import Result
from halab.lab import poll

SETTLE = 2.0  # a service counts as back once it has answered continuously this long


class FailoverError(HalabError):
    pass


def wait(condition: Callable, timeout: float, what: str | Callable[[], str],
         interval: float = 0.3):
    """poll.until for the scenarios: FailoverError at the deadline, progress lines."""
    return poll.until(condition, timeout, what, interval, error=FailoverError, progress=True)


class Cluster:
    """The cluster from this machine: commands on its nodes, its state, and the faults
    a backend (halab.failover.faults: the lab's own, or remote) injects."""

    def __init__(self, inventory: Declared, faults: str | None = None):
        from halab.failover import faults as backends

        self.inventory = inventory
        self.faults = backends.for_inventory(inventory, faults)
        self.names = list(inventory)
        self.hv = inventory.shared
        self.vips = inventory.vips()
        self.fencing = bool(self.hv.get("ha_fencing"))
        # keepalived's VIPs, probed beside Pacemaker's when the benchmark's peer runs
        self.peer_vips: dict[str, str] = {}

    def with_peer(self) -> None:
        self.peer_vips = self.inventory.vips("ha_peer_vips")
        if not self.peer_vips:
            raise HalabError("the inventory declares no ha_peer_vips for the peer")

    def sh(self, name: str, command: str, timeout: float = 60,
           check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.faults.sh(name, command, timeout=timeout, check=check)

    def reachable(self, name: str) -> bool:
        return self.faults.reachable(name)

    def output(self, name: str, command: str, timeout: float = 30) -> str | None:
        """A command's output on a node; None when the node cannot be reached or the
        command fails (for records: a gap, not an error)."""
        if not self.reachable(name):
            return None
        with contextlib.suppress(HalabError):
            proc = self.sh(name, command, timeout=timeout, check=False)
            return proc.stdout if proc.returncode == 0 else None
        return None

    def state(self, prefer: str | None = None, avoid: tuple[str, ...] = ()) -> dict | None:
        """crm_mon from the first reachable node (`prefer` first, never `avoid`)."""
        order = ([prefer] if prefer else []) + [n for n in self.names if n != prefer]
        for name in order:
            if name in avoid or not self.reachable(name):
                continue
            proc = self.sh(name, crm.CRM_MON, timeout=15, check=False)
            if proc.returncode == 0:
                with contextlib.suppress(Exception):
                    return crm.state(proc.stdout)
        return None

    def unhealthy(self, cleaned: list | None = None) -> str | None:
        """Why the cluster is not in its declared state, or None. With `cleaned`, failed
        actions of a cluster otherwise as declared are recorded there and cleared
        (`pcs resource cleanup`): a fault leaves them behind on purpose."""
        try:
            st = self.state()
        except HalabError as exc:
            return str(exc)
        if st is None:
            return "no node answers crm_mon"
        reason = crm.unhealthy(st, self.hv, set(self.names))
        if reason is None:
            via = next(n for n in self.names if self.reachable(n))
            dc = self.sh(via, crm.DC_STATE, timeout=15, check=False).stdout
            if not crm.dc_idle(dc):
                return f"a transition is in progress (DC: {dc.strip()[-80:]})"
        if (reason and st["failures"] and cleaned is not None
                and crm.unhealthy({**st, "failures": []}, self.hv, set(self.names)) is None):
            cleaned.extend(st["failures"])
            self.sh(next(n for n in self.names if self.reachable(n)), "pcs resource cleanup")
        return reason

    def wait_healthy(self, timeout: float = 300, cleaned: list | None = None) -> float:
        """Seconds until the declared steady state holds."""
        t = time.monotonic()
        reason: list[str | None] = [None]

        def ok() -> bool:
            reason[0] = self.unhealthy(cleaned)
            return reason[0] is None

        wait(ok, timeout, lambda: f"a healthy cluster (now: {reason[0]})", interval=1)
        return time.monotonic() - t

    def vip_owner(self, name: str, st: dict) -> str:
        return st["started"][self.inventory.vip_resource(name)][0]

    def redis_master(self, st: dict) -> str:
        return st["roles"]["redis-master"]["Promoted"][0]

    def rabbitmq_leaders(self) -> dict[str, int]:
        """Per node, how many quorum queues it leads (RabbitMQ's own view)."""
        for name in self.names:
            out = self.output(name, "rabbitmqctl -q list_queues type leader --no-table-headers")
            if out is not None:
                return quorum_leaders(out, self.names)
        raise HalabError("no node answered rabbitmqctl list_queues")

    def held(self, addresses: str | None, peers: bool = False) -> set[str]:
        """Pacemaker's VIPs (with `peers`, keepalived's) among a node's addresses."""
        wanted = self.peer_vips if peers else self.vips
        return {a for a in wanted.values() if addresses and f" {a}/" in addresses}

    def held_vips(self, name: str, peers: bool = False) -> set[str]:
        """The VIPs configured inside the node now."""
        return self.held(self.faults.addresses(name), peers)

    def failcount(self, resource: str, node: str, via: str) -> int:
        out = self.sh(via, f"crm_failcount --query -r {resource} -N {node}",
                      check=False).stdout
        value = out.rsplit("value=", 1)[-1].strip() if "value=" in out else "0"
        return 10**6 if value == "INFINITY" else int(value or 0)

    def fenced_since(self, target: str, since: float, status: str = "success") -> list[dict]:
        """Fencing actions against `target` completed (to the second) at or after `since`."""
        for name in self.names:
            if name == target or not self.reachable(name):
                continue
            proc = self.sh(name, crm.fence_history_command(target), check=False)
            if proc.returncode == 0:
                return crm.fenced_since(proc.stdout, since, status)
        return []

    def power(self, action: str, name: str) -> float | None:
        """off, on, isolate or heal a node through the fault backend; for off and
        isolate, when the fault took effect."""
        try:
            return {"off": self.faults.power_off, "on": self.faults.power_on,
                    "isolate": self.faults.isolate, "heal": self.faults.heal}[action](name)
        except HalabError as exc:
            raise FailoverError(f"{action} {name} ({self.faults.kind} faults): {exc}") from exc

    def powered(self, name: str) -> bool:
        with contextlib.suppress(HalabError):
            return self.faults.powered(name)
        return False


class VipWatch:
    """Samples which node holds each VIP, every ~100 ms, for split-brain windows."""

    def __init__(self, cluster: Cluster, interval: float = 0.1, limit: float = 900):
        self.cluster, self.interval, self.limit = cluster, interval, limit
        # (when, holders of each VIP, when each node's addresses were read: None if unknown)
        self.samples: list[tuple[float, dict[str, list[str]], dict[str, float | None]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        end = time.monotonic() + self.limit
        cluster = self.cluster
        with cluster.faults.address_feed() as addresses:
            while not self._stop.is_set() and time.monotonic() < end:
                t = time.time()
                held: dict[str, list[str]] = {a: [] for a in cluster.vips.values()}
                read: dict[str, float | None] = dict.fromkeys(cluster.names)
                for name in cluster.names:
                    with contextlib.suppress(OSError, subprocess.SubprocessError, HalabError):
                        if sample := addresses(name):
                            read[name] = sample[0]
                            for a in cluster.held(sample[1]):
                                held[a].append(name)
                self.samples.append((t, held, read))
                self._stop.wait(self.interval)

    def __enter__(self) -> VipWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def doubled_s(self) -> float:
        """Longest time any VIP was seen up on two nodes at once. Judged by when each
        node's addresses were read, not when they reached us: one node's last reading
        before it lost power, still fresh when another takes the VIP over, is no
        overlap; a holder stays one until a reading shows it without the VIP."""
        first: dict[tuple[str, str], float] = {}  # (VIP, node): read holding it since
        last: dict[tuple[str, str], float] = {}  # (VIP, node): latest reading holding it
        longest = 0.0
        for _, held, read in self.samples:
            for name, at in read.items():
                if at is None:
                    continue
                for a, holders in held.items():
                    if name in holders:
                        first.setdefault((a, name), at)
                        last[(a, name)] = at  # a node's readings come in order
                    else:
                        first.pop((a, name), None)
                        last.pop((a, name), None)
            for a in held:
                nodes = [n for (v, n) in first if v == a]
                for i, x in enumerate(nodes):
                    for y in nodes[i + 1:]:
                        both = (min(last[(a, x)], last[(a, y)])
                                - max(first[(a, x)], first[(a, y)]))
                        if both >= 0:
                            longest = max(longest, both + self.interval)
        return round(longest, 2)

    def owner_since(self, address: str, t0: float) -> tuple[str, float] | None:
        """The node holding `address` at the end and when it started holding it."""
        owner, since = None, None
        for t, held, _ in self.samples:
            if t < t0:
                continue
            now = held[address][0] if len(held[address]) == 1 else None
            if now != owner:
                owner, since = now, t
        return (owner, since) if owner else None


@dataclass
class Spec:
    name: str
    kind: str  # standby | kill | power | maintenance | partition | quorum | full | rolling
    target: str = ""  # vip:<name> | redis-master | galera-writer | dc | rabbitmq-leaders
    #                   | spare
    process: str = ""  # for kill: the daemon's binary
    primitive: str = ""  # for kill: the Pacemaker primitive that runs it
    workloads: bool = True
    # Bound on the return to full health after the restore (a correctness bound; the
    # report gives the times). A powered-off node's return restarts every service on it
    # on a loaded host: 170-260 s measured with the OpenStack control plane.
    timeout: float = 360
    # Workloads whose loss is a known, documented property of the stack in this
    # scenario: reported as figures, not counted as violations.
    expected_loss: dict[str, str] = field(default_factory=dict)


CATALOGUE = {s.name: s for s in [
    Spec("standby-public-vip-owner", "standby", "vip:public", workloads=False),
    Spec("standby-redis-master", "standby", "redis-master", workloads=False),
    Spec("kill-haproxy", "kill", "vip:public", "haproxy", "haproxy", workloads=False),
    Spec("kill-memcached", "kill", "spare", "memcached", "memcached", workloads=False),
    Spec("kill-redis-master", "kill", "redis-master", "redis-server", "redis"),
    Spec("kill-mysqld", "kill", "galera-writer", "mariadbd", "galera"),
    Spec("kill-rabbitmq", "kill", "spare", "beam.smp", "rabbitmq"),
    Spec("power-loss-public-vip-owner", "power", "vip:public"),
    Spec("power-loss-redis-master", "power", "redis-master"),
    Spec("power-loss-galera-writer", "power", "galera-writer"),
    Spec("power-loss-dc", "power", "dc"),
    Spec("power-loss-rabbitmq-leaders", "power", "rabbitmq-leaders"),
    Spec("maintenance", "maintenance", "vip:internal_api", workloads=False),
    Spec("partition", "partition", "vip:public"),
    Spec("quorum-loss", "quorum", "spare", workloads=False),
    Spec("full-restart", "full", workloads=True, timeout=600, expected_loss={
        "rabbitmq": "rabbitmq-cluster bootstraps the first node with an empty mnesia "
                    "(rmq_start_first: rmq_wipe_data), so no queue survives a full stop",
        "servers": "a boot whose message was still queued in RabbitMQ when the last "
                   "node stopped is wiped with it (above) and stays in BUILD"}),
    Spec("rolling-restart", "rolling", workloads=True, timeout=900),
]}


@dataclass
class Run:
    """One scenario run under way: what it acts on, and what it saw so far (`result`:
    the report's record, and the test's verdict)."""

    spec: Spec
    cluster: Cluster
    result: Result = field(default_factory=Result)

    # Kept in the result alone (what the report and the bundle get): set them there.
    @property
    def victim(self) -> str:
        return self.result.victim

    @property
    def t0(self) -> float:
        return self.result.t0

    @property
    def violations(self) -> list[str]:
        return self.result.violations

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.violations.append(message)

    def since(self) -> float:
        return round(time.time() - self.t0, 2)


TARGETS = {"redis-master": "the Redis master's node", "galera-writer": "the Galera writer",
           "dc": "the DC", "rabbitmq-leaders": "the node leading the most RabbitMQ queues",
           "spare": "a node that is neither the DC nor the public VIP's owner"}


def plan(cluster: Cluster, names: list[str], runs: int) -> str:
    """What each scenario will do to which machine, before anything is done."""
    f = cluster.faults
    lines = [f"{len(names)} scenario(s) x {runs} run(s) on {', '.join(cluster.names)} "
             f"({f.kind} faults); each waits for a healthy cluster first and restores "
             "after at most a few minutes:"]
    for name in names:
        spec = CATALOGUE[name]
        who = (f"the node holding the {spec.target[4:]} VIP" if spec.target.startswith("vip:")
               else TARGETS.get(spec.target, spec.target))
        does = {
            "standby": f"pcs node standby {who}, then unstandby",
            "kill": f"kill -9 {spec.process} on {who}, then pcs resource cleanup",
            "power": f.plan(who, "power"),
            "maintenance": f"pcs cluster stop on {who}, then start",
            "partition": f.plan(who, "partition"),
            "quorum": f.plan(f"every node but {who}", "power"),
            "full": "pcs cluster stop --all, then pcs cluster start --all",
            "rolling": "on each node in turn: its Redis master banned away, pcs cluster "
                       "stop, then start, the ban cleared",
        }[spec.kind]
        lines.append(f"  {name}: {does}")
    return "\n".join(lines)


def check_allowed(cluster: Cluster, yes: bool) -> None:
    """Faults in machines that are not the lab's only when asked for: --yes, or the
    inventory's ha_failover_allowed."""
    if cluster.faults.kind != "lab" and not (yes or cluster.hv.get("ha_failover_allowed")):
        raise HalabError("refusing to inject faults into these machines without --yes "
                         "(or ha_failover_allowed: true in the inventory)")


def pick(cluster: Cluster, target: str, st: dict) -> str:
    if target.startswith("vip:"):
        return cluster.vip_owner(target[4:], st)
    if target == "redis-master":
        return cluster.redis_master(st)
    if target == "galera-writer":
        return cluster.names[0]  # HAProxy's active mysql backend: the others are backups
    if target == "dc":
        return st["dc"]
    if target == "rabbitmq-leaders":
        counts = cluster.rabbitmq_leaders()
        return max(cluster.names, key=lambda n: counts[n])
    # A node that is neither the DC nor holds the public VIP: its loss hurts least.
    busy = {st["dc"], cluster.vip_owner("public", st)}
    return next((n for n in reversed(cluster.names) if n not in busy), cluster.names[-1])


def _clients(cluster: Cluster, with_workloads: bool) -> tuple[object, dict]:
    from halab.failover import probe, workloads
    checks = probe.from_inventory(cluster.inventory)
    checks.update({f"{PEER}{n}": probe.healthz(cluster.inventory, a)
                   for n, a in cluster.peer_vips.items()})
    pr = probe.Probe(checks)
    loads = {}
    if with_workloads:
        # The OpenStack workloads share one token and catalog (the Session is thread-safe).
        session = workloads.admin_session(cluster.inventory)
        loads = {"bank": workloads.Bank.from_inventory(cluster.inventory),
                 "rabbitmq": workloads.RabbitConfirms.from_inventory(cluster.inventory),
                 "redis": workloads.RedisWait.from_inventory(cluster.inventory),
                 "keystone": workloads.Tokens.from_inventory(cluster.inventory),
                 "servers": workloads.ServerBoots.from_inventory(cluster.inventory, session),
                 "images": workloads.ImageReads.from_inventory(cluster.inventory, session)}
    return pr, loads


def run(cluster: Cluster, name: str, gate_timeout: float = 300) -> Result:
    """Run one scenario of the catalogue; returns its result (with `violations`)."""
    spec = CATALOGUE[name]
    r = Run(spec, cluster, Result(scenario=name, faults=cluster.faults.kind))
    cluster.wait_healthy(gate_timeout, cleaned=r.result.failed_actions_before)
    st = cluster.state()
    r.result.victim = pick(cluster, spec.target, st) if spec.target else ""
    r.result.dc_before = st["dc"]  # losing the DC adds an election to the recovery
    r.result.public_owner_before = cluster.vip_owner("public", st)
    pr, loads = _clients(cluster, spec.workloads)
    pr.start()
    for w in loads.values():
        w.start()
    watch = VipWatch(cluster)
    restore: Callable[[], None] = lambda: None  # noqa: E731
    try:
        with watch:
            wait(pr.all_up, 30, lambda: f"every service answering before the fault "
                 f"(not answering: {', '.join(pr.down())})")
            if cluster.peer_vips:  # one power loss must take both kinds of VIP
                owner = r.result.public_owner_before
                peers = set(cluster.peer_vips.values())
                wait(lambda: cluster.held_vips(owner, peers=True) == peers,
                     30, f"keepalived's VIPs on {owner}, the public VIP's owner")
            r.result.t0 = time.time()
            restore = INJECT[spec.kind](r, st)
            try:
                OBSERVE[spec.kind](r, st, pr)
            finally:
                t_restore = r.result.restore_t = time.time()
                restore()
                r.result.healthy_again_s = round(time.time() - t_restore + cluster.wait_healthy(
                    spec.timeout, cleaned=r.result.failed_actions), 2)
            wait(lambda: pr.up_for(SETTLE), 120, lambda: f"every service answering after "
                 f"restore (not answering now: {', '.join(pr.down()) or 'none'})")
            r.result.split_brain_vip_s = watch.doubled_s()
            r.check(watch.doubled_s() == 0, f"a VIP was up on two nodes for "
                                           f"{watch.doubled_s()}s")
    except HalabError as exc:  # FailoverError included: a wait ran out
        r.violations.append(str(exc))
        _bundle(r, pr)  # before the restore changes what there is to see
        with contextlib.suppress(HalabError):  # leave the cluster healthy for the next one
            restore()
            cluster.wait_healthy(spec.timeout, cleaned=r.result.failed_actions)
    finally:
        for w in loads.values():
            w.stop()
        pr.stop()
    for key, w in loads.items():
        try:
            r.result.data[key] = w.verify()
        except Exception as exc:  # noqa: BLE001 - a verify that cannot run is a finding
            r.violations.append(f"{key}: verify failed: {exc}")
            continue
        if key == "servers":
            _dropped_by_conductor(r.cluster, r.result.data[key], _cut_off(r),
                                  r.result.restore_t)
        lost = {k: v for k, v in r.result.data[key].items()
                if k.startswith("lost") and k != "lost_unacknowledged" and v}
        if key in spec.expected_loss:
            r.result.data[key]["expected_loss"] = spec.expected_loss[key]
        else:
            r.check(not lost, f"{key} lost acknowledged data: {lost}")
        r.violations.extend(f"{key}: {v}" for v in r.result.data[key].get("violations", []))
    r.result.services = {s: _service(pr, s, r.t0, r.result.restore_t) for s in pr.names}
    r.result.samples = pr.samples_since(r.t0 - 5)
    _timeline(r)
    _peer(r)
    if "bank" in r.result.data:
        r.result.galera_write_gap_s = r.result.data["bank"].get("longest_gap_s")
    if "keystone" in r.result.data:
        r.result.keystone_gap_s = r.result.data["keystone"].get("longest_gap_s")
    if "servers" in r.result.data:
        r.result.boot_gap_s = r.result.data["servers"].get("longest_gap_s")
    if "images" in r.result.data:
        r.result.image_gap_s = r.result.data["images"].get("longest_gap_s")
    return r.result


def _bundle(r: Run, pr=None) -> None:
    from halab.cluster import collect

    extra: dict[str, object] = {"run.json": r.result.as_dict()}
    if pr is not None:
        extra["probe.json"] = pr.samples_since((r.t0 or time.time()) - 5)
    try:
        r.result.bundle = str(collect.bundle(
            f"{r.spec.name}-{r.victim or 'cluster'}", (r.t0 or time.time()) - 60,
            extra=extra))
    except (HalabError, OSError) as exc:
        r.result.bundle = f"not written: {exc}"


NOVA_CONDUCTOR_LOG = "/var/log/nova/nova-conductor.log"
NOVA_API_LOG = "/var/log/nova/nova-api.log"
NOVA_COMPUTE_LOG = "/var/log/nova/nova-compute.log"
NOVA_LOGS = "/var/log/nova/*.log"
PLACEMENT_LOGS = "/var/log/placement/*.log"
# oslo.messaging's AMQP driver at DEBUG (the nova role sets it): nova-api's cast of a
# boot to the conductors, logged under the request's id.
_CONDUCTOR_CAST = re.compile(r"CAST unique_id: (\w+) exchange '\w+' topic 'conductor'")


def _cut_off(r: Run) -> list[str]:
    """The nodes this run's fault took down at once, with whatever they were doing."""
    if r.spec.kind in ("power", "partition"):
        return [r.victim]
    if r.spec.kind == "quorum":
        return [n for n in r.cluster.names if n != r.victim]
    return []


def _log_time(line: str) -> float | None:
    """The UTC time an OpenStack log line starts with (the nodes log in UTC)."""
    try:
        whole, _, ms = line[:23].partition(".")
        return calendar.timegm(time.strptime(whole, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000
    except ValueError:
        return None


def _conductor_lines(cluster: Cluster, request_id: str) -> dict[str, list[str]]:
    """Each node's conductor lines for a request: its own, and the receipt of the cast
    nova-api sent for it (the AMQP driver logs the cast's unique id at both ends; the
    conductor logs it before it knows the request)."""
    casts: set[str] = set()
    for n in cluster.names:
        api = cluster.output(n, f"grep -hF -- {shlex.quote(request_id)} {NOVA_API_LOG}")
        casts.update(_CONDUCTOR_CAST.findall(api or ""))
    wanted = [request_id, *(f"unique_id: {c}" for c in sorted(casts))]
    grep = f"grep -hF {' '.join(f'-e {shlex.quote(w)}' for w in wanted)} {NOVA_CONDUCTOR_LOG}"
    return {n: [ln.strip() for ln in (cluster.output(n, grep) or "").splitlines()
                if ln.strip()] for n in cluster.names}


def _request_lines(cluster: Cluster, request_id: str) -> dict[str, list[tuple[float, str, str]]]:
    """Each node's lines naming the request in Nova's and Placement's logs, as (time, log
    file name, line), in time order."""
    logs = f"{NOVA_LOGS} {PLACEMENT_LOGS}"
    found = {}
    for n in cluster.names:
        out = cluster.output(n, f"grep -HF -- {shlex.quote(request_id)} {logs} 2>/dev/null")
        lines = [ln.partition(":") for ln in (out or "").splitlines() if ln.strip()]
        found[n] = sorted((t, f.rsplit("/", 1)[-1], ln.strip()) for f, _, ln in lines
                          if (t := _log_time(ln.strip())) is not None)
    return found


def _trail(lines: dict[str, list[tuple[float, str, str]]], keep: int = 6) -> list[str]:
    """Where a boot's request ended, across Nova's services and Placement on every node:
    its warnings and errors and each node's last line, in time order, the last `keep`."""
    found = set()
    for n, timed in lines.items():
        found.update((t, n, log, ln) for t, log, ln in timed
                     if " ERROR " in ln or " WARNING " in ln)
        found.update((t, n, log, ln) for t, log, ln in timed[-1:])
    return [f"{n} {log}: {line[:220]}" for _, n, log, line in sorted(found)[-keep:]]


def _dropped_by_conductor(cluster: Cluster, servers: dict, cut_off: Sequence[str] = (),
                          before: float | None = None) -> None:
    """Boots stuck in BUILD that Nova's conductor dropped, moved out of lost_in_build
    with the conductor's log as evidence; a stuck boot without such evidence stays lost.
    Nova neither retries nor ends such a build. dropped_by_conductor: the conductor
    logged an exception for the request (a database write or the cast to the chosen
    compute failed during the fault). held_by_lost_conductor: the request's last
    conductor line, its receipt included, is on a node the fault cut off, from before
    it came back (RPC casts are acknowledged on receipt: what a conductor held died
    with it). dropped_by_compute: the compute's build raised before it could set ERROR
    and its log says it reverted the task state on failure (a database write through
    the conductor failed during the fault: the conductor answers it as an expected
    exception and logs it at DEBUG only)."""
    kept, dropped, held, by_compute = [], [], [], []
    for boot in servers.get("lost_in_build", []):
        found = last = None
        if boot.get("request_id"):
            lines = _conductor_lines(cluster, boot["request_id"])
            found = next(((n, ln) for n, own in lines.items() for ln in own
                          if "Exception during message handling" in ln), None)
            ends = sorted(((t, n, own[-1]) for n, own in lines.items()
                           if own and (t := _log_time(own[-1])) is not None), reverse=True)
            if not found and before and ends and ends[0][1] in cut_off \
                    and ends[0][0] < before:
                last = ends[0][1:]
        if found:
            exception = found[1].partition("Exception during message handling: ")[2]
            dropped.append({**boot, "conductor": found[0], "exception": exception[:300]})
        elif last:
            held.append({**boot, "conductor": last[0], "last_line": last[1][:300]})
        else:
            rid = boot.get("request_id")
            lines = _request_lines(cluster, rid) if rid else {}
            if gave_up := _compute_gave_up(lines):
                by_compute.append({**boot, **gave_up})
            else:  # what the boot's trail says comes first in the failure's message
                kept.append({"id": boot["id"], "trail": _trail(lines), **boot})
    servers["lost_in_build"], servers["dropped_by_conductor"] = kept, dropped
    servers["held_by_lost_conductor"] = held
    servers["dropped_by_compute"] = by_compute
    servers["ok"] = not servers.get("violations") and not kept


_REVERTED = ("reverted task state", "Failed to revert task state")
_EXPECTED = "Expected exception during message handling"


def _compute_gave_up(lines: dict[str, list[tuple[float, str, str]]]) -> dict | None:
    """The compute's line for the request that says its build raised and the task state
    was reverted (Nova leaves the server in BUILD then), with the conductor's DEBUG line
    for the exception the compute got back, if one was logged."""
    compute = NOVA_COMPUTE_LOG.rsplit("/", 1)[-1]
    conductor = NOVA_CONDUCTOR_LOG.rsplit("/", 1)[-1]
    for n, timed in lines.items():
        reverted = next((ln for _, log, ln in timed
                         if log == compute and any(r in ln for r in _REVERTED)), None)
        if reverted:
            got = [ln for own in lines.values() for _, log, ln in own
                   if log == conductor and _EXPECTED in ln]
            return {"compute": n, "last_line": reverted[:300],
                    "exception": got[0].partition(_EXPECTED)[2][:300] if got else ""}
    return None


def _service(pr, name: str, t0: float, restore_t: float | None) -> dict:
    """A service's recovery from the fault, and the worst outage the restore caused
    (the lost node powered back and rejoining must cost clients nothing)."""
    back = pr.recovered_after(name, t0, restore_t)
    returned = None
    if restore_t and back is not None:  # outages that began once it was back and restored
        returned = pr.longest_outage(name, max(restore_t, t0 + back))
    outages = pr.outages(name, t0)
    first = next((round(end - t0, 3) for start, end in outages
                  if end is not None and end >= t0), None)
    return {"recovered_s": back, "first_back_s": 0.0 if not outages else first,
            "return_outage_s": returned, "outages": outages}


PEER = "keepalived:"  # probe names of keepalived's VIPs


def _peer(r: Run) -> None:
    """Pacemaker's public VIP against keepalived's, same fault, same run: seconds until
    each first answered again, and their ratio. First answer on both sides: keepalived's
    VIP may move once more later, to follow the public VIP (the benchmark's coupling,
    not a failover)."""
    services = r.result.services
    if not r.victim or r.victim != r.result.public_owner_before:
        return  # the fault did not take the VIPs' owner
    peers = {k: v for k, v in services.items() if k.startswith(PEER)}
    public = services.get("public", {}).get("first_back_s")
    figures = {}
    for key, svc in peers.items():
        peer = svc["first_back_s"]
        figures[key[len(PEER):]] = {
            "pacemaker_vip_back_s": public, "keepalived_vip_back_s": peer,
            "ratio": round(public / peer, 2) if public and peer else None}
    r.result.peer = figures or None  # None: no keepalived peer in this run


def _timeline(r: Run) -> None:
    """The run's phases from the cluster's own records (journals, the fence switch's
    log), seconds from the fault; a record that cannot be read is a gap, not an error."""
    from halab.failover import timeline

    events = timeline.collect(r.cluster.output, r.cluster.names, r.cluster.faults.records(),
                              r.t0 - 2, time.time())
    r.result.timeline = phases = timeline.phases(events, r.t0, r.victim)
    # Aborts while the recovery ran: they hold every new action until those in flight end.
    until = max([v for k, v in phases.items() if k.startswith("vip_started")]
                + [r.result.services_back_s or 0])
    r.result.aborts = timeline.aborts(events, r.t0, r.t0 + until)
    r.result.events = timeline.as_json(events, r.t0)


# ---- faults: each injects and returns its restore ---------------------------------

def _observer(r: Run) -> str:
    return next(n for n in r.cluster.names if n != r.victim and r.cluster.reachable(n))


def _inject_standby(r: Run, st: dict):
    r.cluster.sh(_observer(r), f"pcs node standby {r.victim}")
    return lambda: r.cluster.sh(_observer(r), f"pcs node unstandby {r.victim}")


def _inject_kill(r: Run, st: dict):
    spec, cluster = r.spec, r.cluster
    r.result.failcount_before = cluster.failcount(spec.primitive, r.victim, r.victim)
    before = time.time()
    out = cluster.sh(r.victim, f"kill -9 $(pidof {spec.process}) && date +%s.%N").stdout
    _took_effect(r, _node_moment(out, before, time.time()))

    def restore() -> None:
        cluster.sh(_observer(r), f"pcs resource cleanup {spec.primitive} node={r.victim}")
    return restore


def _node_moment(out: str, before: float, after: float) -> float:
    """When a command on a node acted, by the node's clock (the host's, in the lab)
    when that reading lies within the call; else the call's start."""
    with contextlib.suppress(ValueError, IndexError):
        moment = float(out.split()[-1])
        if before <= moment <= after:
            return moment
    return before


def _took_effect(r: Run, moment: float) -> None:
    """Measure from when the fault took effect; the backend's command may take seconds
    before it (a fence agent starting up), which is not the cluster's recovery."""
    r.result.inject_s = round(moment - r.t0, 2)
    r.result.t0 = moment


def _inject_power(r: Run, st: dict):
    _took_effect(r, r.cluster.power("off", r.victim))
    return lambda: _power_back(r, [r.victim])


def _power_back(r: Run, victims: list[str]) -> None:
    """With fencing the cluster powers a lost node back on itself (reboot); without, the
    operator does. Either way the node must run again."""
    for name in victims:
        st = r.cluster.state(avoid=tuple(victims))
        if r.cluster.fencing and st and st["quorum"]:  # only a quorate partition fences
            with contextlib.suppress(FailoverError):
                wait(lambda n=name: r.cluster.powered(n), 60,
                     f"fencing to power {name} back on", interval=1)
        if not r.cluster.powered(name):
            r.cluster.power("on", name)


def _inject_maintenance(r: Run, st: dict):
    r.cluster.sh(r.victim, "pcs cluster stop")
    return lambda: r.cluster.sh(r.victim, "pcs cluster start")


def _inject_partition(r: Run, st: dict):
    _took_effect(r, r.cluster.power("isolate", r.victim))

    def restore() -> None:
        if r.cluster.fencing:  # the node must have been fenced (and booted) before it heals
            with contextlib.suppress(FailoverError):
                wait(lambda: r.cluster.powered(r.victim), 60,
                     f"{r.victim} powered back on", interval=1)
        if not r.cluster.powered(r.victim):
            r.cluster.power("on", r.victim)
        r.cluster.power("heal", r.victim)  # the backend waits for a rebooting node
    return restore


def _inject_quorum(r: Run, st: dict):
    lost = [n for n in r.cluster.names if n != r.victim]
    r.result.lost = lost
    moments = [r.cluster.power("off", name) for name in lost]
    _took_effect(r, moments[-1])  # quorum is lost with the last of them
    return lambda: _power_back(r, lost)


def _inject_full(r: Run, st: dict):
    r.cluster.sh(r.cluster.names[0], "pcs cluster stop --all", timeout=180)

    def restore() -> None:
        proc = r.cluster.sh(r.cluster.names[0], "pcs cluster start --all", timeout=180, check=False)
        if proc.returncode != 0:
            # A node's pcsd answers HTTP 400 when that node's own `pcs cluster start`
            # failed: the bundle keeps its journal and pcsd.log before the local starts
            # that bring the cluster back for what follows.
            error = (proc.stderr or proc.stdout).strip()[-300:]
            r.result.start_all_error = error
            r.violations.append(f"pcs cluster start --all failed: {error}")
            _bundle(r)
            for name in r.cluster.names:
                r.cluster.sh(name, "pcs cluster start", timeout=120, check=False)
    return restore


def _inject_rolling(r: Run, st: dict):
    return lambda: None


INJECT = {"standby": _inject_standby, "kill": _inject_kill, "power": _inject_power,
          "maintenance": _inject_maintenance, "partition": _inject_partition,
          "quorum": _inject_quorum, "full": _inject_full, "rolling": _inject_rolling}


# ---- what must hold while the fault lasts -----------------------------------------

def _services_back(r: Run, pr, timeout: float = 120) -> None:
    wait(lambda: pr.up_for(SETTLE), timeout, "every service answering through its VIP")
    r.result.services_back_s = r.since()


def _detected(r: Run, gone: str) -> dict:
    """Wait until a surviving node's crm_mon shows `gone` out of the cluster."""
    st = wait(lambda: (s := r.cluster.state(avoid=(gone,))) and gone not in s["online"] and s,
              120, f"the cluster to see {gone} gone", interval=0.2)
    r.result.detected_s = r.since()
    return st


def _moved(r: Run, before: dict, gone: str) -> dict:
    """Every VIP the lost node held runs elsewhere, Redis has a master elsewhere,
    Galera stays promoted on the rest, RabbitMQ runs on the rest."""
    cluster = r.cluster
    survivors = set(cluster.names) - {gone}

    def settled():
        st = cluster.state(avoid=(gone,))
        if not st:
            return None
        for name in cluster.vips:
            where = st["started"].get(cluster.inventory.vip_resource(name), [])
            if len(where) != 1 or where[0] == gone:
                return None
        masters = st["roles"].get("redis-master", {}).get("Promoted", [])
        if len(masters) != 1 or masters[0] == gone:
            return None
        return st

    st = wait(settled, 120, f"VIPs and the Redis master away from {gone}", interval=0.3)
    r.result.vips_moved_s = r.since()
    if cluster.redis_master(before) == gone:
        r.result.redis_promoted_s = r.since()
    wait(lambda: (s := cluster.state(avoid=(gone,))) and
         survivors <= set(s["roles"].get("galera-master", {}).get("Promoted", [])) and
         survivors <= set(s["started"].get("rabbitmq-clone", [])),
         120, "Galera promoted and RabbitMQ running on the survivors")
    return st


def _observe_node_loss(r: Run, before: dict, pr) -> None:
    _detected(r, r.victim)
    _moved(r, before, r.victim)
    _services_back(r, pr)


def _observe_standby(r: Run, before: dict, pr) -> None:
    _moved(r, before, r.victim)
    _services_back(r, pr)


def _observe_kill(r: Run, before: dict, pr) -> None:
    spec, cluster = r.spec, r.cluster
    obs = _observer(r)
    wait(lambda: cluster.failcount(spec.primitive, r.victim, obs) > r.result.failcount_before,
         120, f"Pacemaker to notice {spec.process} died on {r.victim}", interval=0.3)
    r.result.detected_s = r.since()
    # One monitor failure; a promoted instance may add a failed demote of the dead
    # process, so the count is reported rather than required to be exactly +1.
    r.result.failcount_after = cluster.failcount(spec.primitive, r.victim, obs)
    rsc = next(rs for rs in cluster.hv["pacemaker_resources"] if rs["id"] == spec.primitive)
    rid = (rsc.get("clone") or rsc.get("promotable") or rsc)["id"]
    if str((rsc.get("meta") or {}).get("migration-threshold")) == "1":
        # The failed instance stays stopped until failure-timeout (or the restore's
        # cleanup); a promoted one hands its role to another node.
        if rsc.get("promotable") and before["roles"][rid]["Promoted"] == [r.victim]:
            wait(lambda: (s := cluster.state()) and s["roles"].get(rid, {})
                 .get("Promoted", [r.victim])[0] != r.victim, 120,
                 f"{rid} promoted on another node than {r.victim}")
    else:
        # A correctness bound: RabbitMQ's restart runs a dozen Erlang CLIs (stop, the
        # survivors' post-stop notifications, a start that rejoins), 5-7 s each on a
        # loaded 2-core machine.
        st = wait(lambda: (s := cluster.state()) and sorted(s["started"].get(rid, [])) ==
                  sorted(cluster.names) and s, 300, f"{rid} running on every node again")
        r.result.resource_back_s = r.since()
        r.check(all(len(v) == len(set(v)) for v in st["started"].values()),
                "an instance runs twice on one node")
    if spec.primitive == "redis" and cluster.redis_master(before) == r.victim:
        r.result.redis_promoted_s = r.since()
    _services_back(r, pr)


def _observe_partition(r: Run, before: dict, pr) -> None:
    cluster = r.cluster
    _detected(r, r.victim)
    if cluster.fencing:
        wait(lambda: cluster.fenced_since(r.victim, r.t0), 120, f"{r.victim} fenced")
        r.result.fenced_s = r.since()
    _moved(r, before, r.victim)
    _services_back(r, pr)
    # The cut-off node must have stopped its resources (no quorum) or been fenced.
    wait(lambda: not cluster.held_vips(r.victim), 60, f"{r.victim} to drop its VIPs")


def _observe_quorum(r: Run, before: dict, pr) -> None:
    cluster = r.cluster
    survivor = r.victim
    wait(lambda: (s := cluster.state(prefer=survivor)) and not s["quorum"], 120,
         f"{survivor} to lose quorum", interval=0.3)
    r.result.detected_s = r.since()

    remaining: list[str] = []

    def stopped():
        s = cluster.state(prefer=survivor)
        if not s:
            return None
        remaining[:] = sorted(rid for rid, where in s["started"].items() if survivor in where)
        return not remaining and s

    try:
        wait(stopped, 120, f"{survivor} to stop every resource (no-quorum-policy=stop)")
    except FailoverError as exc:
        raise FailoverError(f"{exc}; still started there: {remaining}") from None
    r.result.survivor_stopped_s = r.since()
    r.check(not cluster.held_vips(survivor), f"{survivor} holds a VIP without quorum")


def _observe_full(r: Run, before: dict, pr) -> None:
    wait(lambda: not any(r.cluster.held_vips(n) for n in r.cluster.names), 180,
         "every VIP down after the full stop")
    r.result.stopped_s = r.since()


def quorum_leaders(out: str, names: list[str]) -> dict[str, int]:
    """`rabbitmqctl list_queues type leader` read as quorum queues led per node
    (classic queues have no leader)."""
    counts = dict.fromkeys(names, 0)
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "quorum":
            node = fields[1].split("@", 1)[-1]
            if node in counts:
                counts[node] += 1
    return counts


def single_promoted(hv: dict) -> list[str]:
    """Promotable sets with one promoted instance (Redis): the roles a planned stop
    moves away first."""
    return [rsc["promotable"]["id"] for rsc in hv["pacemaker_resources"]
            if rsc.get("promotable")
            and int(rsc["promotable"].get("meta", {}).get("promoted-max", 1)) == 1]


def _ban_promoted(r: Run, name: str, banned: list[str]) -> None:
    """Ban `name`'s single promoted roles from it before its planned stop, and wait for
    the promotion elsewhere. Demoted in the stop's own transition, Redis was promoted
    elsewhere only after Galera's demote aborted it and every action in flight on the
    stopping node ended (RabbitMQ's stop): unwritable 14-27 s. A ban, not `pcs resource
    move`: move removes its constraint at once and refuses when its simulation shows
    the role going back, which a node restarted moments before can make it show."""
    st = r.cluster.state()
    for rid in single_promoted(r.cluster.hv):
        if st and name in st["roles"].get(rid, {}).get("Promoted", []):
            banned.append(rid)  # cleared even if the wait below fails
            r.cluster.sh(name, f"pcs resource ban {rid} {name} --promoted --wait=120",
                         timeout=150)
            r.result.handed_over.append(f"{rid}: away from {name}")


def _observe_rolling(r: Run, before: dict, pr) -> None:
    cluster = r.cluster
    r.result.steps_s = []
    r.result.handed_over = []
    for name in cluster.names:
        banned: list[str] = []
        try:
            _ban_promoted(r, name, banned)
            cluster.sh(name, "pcs cluster stop", timeout=180)
            wait(lambda n=name: (s := cluster.state(avoid=(n,))) and n not in s["online"],
                 120, f"{name} out of the cluster")
            cluster.sh(name, "pcs cluster start", timeout=180)
            cluster.wait_healthy(r.spec.timeout)
        finally:
            # Once the node is back: its fresh replica does not outscore the master.
            for rid in banned:
                cluster.sh(name, f"pcs resource clear {rid} {name}", timeout=60)
        r.result.steps_s.append(r.since())


OBSERVE = {"standby": _observe_standby, "kill": _observe_kill,
           "power": _observe_node_loss, "maintenance": _observe_node_loss,
           "partition": _observe_partition, "quorum": _observe_quorum,
           "full": _observe_full, "rolling": _observe_rolling}



# ---- the failover report ------------------------------------------------------------

REPORT_SCENARIOS = ("power-loss-public-vip-owner", "power-loss-redis-master",
                    "power-loss-galera-writer", "kill-redis-master", "partition")


def declared_token(cluster: Cluster) -> int | None:
    """The token the inventory declares (pacemaker_totem), None for corosync's own."""
    token = (cluster.hv.get("pacemaker_totem") or {}).get("token")
    return None if token is None else int(token)


def set_totem(cluster: Cluster, token_ms: int | None) -> None:
    """Corosync's token timeout on the running cluster (None: corosync's default)."""
    value = "" if token_ms is None else str(token_ms)
    cluster.sh(cluster.names[0], f"pcs cluster config update totem token={value}")
    cluster.sh(cluster.names[0], "pcs cluster reload corosync")


def campaign(cluster: Cluster, scenarios: list[str], runs: int, totems: list[int | None],
             out_dir, log=print) -> list:
    """Every scenario `runs` times under each totem setting. Each run's result is
    appended to failover-<time>.jsonl as soon as it ends; the report is written from
    the runs there are, also when an error or Ctrl-C ends the campaign early."""
    from pathlib import Path

    from halab.cluster import declared
    from halab.failover import report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = out / f"failover-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    hidden = declared.secret_values(cluster.inventory.secrets_dir)
    results: list[Result] = []
    paths: list = []
    try:
        for token in totems:
            label = "default" if token is None else f"token-{token}"
            set_totem(cluster, token)
            for name in scenarios:
                for i in range(1, runs + 1):
                    res = run(cluster, name)
                    res.totem, res.run = label, i
                    results.append(res)
                    with lines.open("a") as fh:
                        fh.write(declared.scrub(res.to_json(), hidden) + "\n")
                    log(f"{label} {name} #{i}: victim {res.victim}, detected "
                        f"{res.detected_s}s, services back "
                        f"{res.services_back_s}s, violations {len(res.violations)}")
    finally:
        try:
            set_totem(cluster, declared_token(cluster))
        finally:
            if results:
                paths = [lines, *report.write(results, out, cluster.inventory.secrets_dir)]
                if len(results) < runs * len(scenarios) * len(totems):
                    log(f"campaign ended early: report of {len(results)} runs: "
                        + " ".join(map(str, paths)))
    return paths
