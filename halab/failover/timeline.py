"""A fault run's timeline from the cluster's own records: the surviving nodes' journals
(corosync, the pacemaker daemons, HAProxy) and the fence switch's log. The nodes share
the host's kernel and clock, so these records sit on one time axis with the host's
fault injection and client probes, without skew.

Parsing is pure (journal JSON lines and switch log lines in, events out); `collect`
fetches the records over ssh. A phase is the first event of its kind after the fault."""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

# Journal identifiers read on the nodes.
IDENTIFIERS = ("corosync", "pacemaker-controld", "pacemaker-fenced", "pacemaker-schedulerd",
               "haproxy")


@dataclass(frozen=True)
class Kind:
    key: str
    label: str
    source: str  # a journal identifier, or "switch" for the fence switch's log
    pattern: re.Pattern


def _k(key: str, label: str, source: str, pattern: str) -> Kind:
    return Kind(key, label, source, re.compile(pattern))


# The records that time each step of a node-loss recovery (Pacemaker 2.1, corosync 3.1),
# in the order they happen. `node` names the lost node where the line carries it;
# `what` names a resource, an HAProxy server or a transition.
KINDS = (
    _k("token_lost", "corosync: token lost", "corosync",
       r"A processor failed, forming new configuration"),
    _k("membership", "corosync: new membership", "corosync",
       r"A new membership \(\S+\) was formed\. Members left"),
    # corosync's token_warning (75 % of the token by default): a near miss, no fault.
    _k("token_late", "corosync: token late", "corosync",
       r"Token has not been received in (?P<what>\d+) ms"),
    _k("node_lost", "pacemaker: node lost", "pacemaker-controld",
       r"Node (?P<node>\S+) state is now lost"),
    _k("transition", "transition computed", "pacemaker-schedulerd",
       r"Calculated transition (?P<what>\d+)"),
    _k("fence_requested", "fencing requested", "pacemaker-controld",
       r"Requesting fencing \(\w+\) (?:of node|targeting node) (?P<node>\S+)"),
    _k("switch_off", "fence switch: node off", "switch",
       r"off (?P<node>\S+): no process left"),
    _k("fence_confirmed", "fencing confirmed", "pacemaker-controld",
       r"Peer (?P<node>\S+) was terminated \(\w+\) by \S+ on behalf of \S+: OK"),
    _k("aborted", "transition aborted", "pacemaker-controld",
       r"Transition (?P<what>\d+) aborted(?P<why>.*)"),
    _k("vip_started", "VIP started", "pacemaker-controld",
       r"Result of start operation for (?P<what>ip-\S+) on (?P<on>\S+): ok"),
    _k("promoted", "promoted", "pacemaker-controld",
       r"Result of promote operation for (?P<what>\S+) on (?P<on>\S+): ok"),
    _k("backend_up", "HAProxy backend up", "haproxy",
       r"Server (?P<what>\S+/\S+) is UP"),
    _k("backend_down", "HAProxy backend down", "haproxy",
       r"Server (?P<what>\S+/\S+) is DOWN"),
    _k("transition_done", "transition complete", "pacemaker-controld",
       r"Transition (?P<what>\d+) \(Complete=.*\): Complete"),
    _k("node_joined", "lost node rejoined", "pacemaker-controld",
       r"Node (?P<node>\S+) state is now member"),
)
KIND = {k.key: k for k in KINDS}

# The phases shown per run, in the order a node-loss recovery passes them (keys of KIND).
PHASES = ("token_lost", "membership", "fence_requested", "switch_off", "fence_confirmed",
          "vip_started", "promoted", "backend_up")


@dataclass
class Event:
    t: float  # epoch seconds
    kind: str
    source: str
    node: str = ""  # the lost node, where the record names it
    what: str = ""
    on: str = ""  # where the action ran, or whose journal holds the record
    text: str = ""


def match(source: str, message: str, t: float, host: str = "") -> Event | None:
    for kind in KINDS:
        if kind.source != source:
            continue
        m = kind.pattern.search(message)
        if m:
            g = m.groupdict()
            what = g.get("what") or ""
            if kind.key == "aborted":
                what = f"{what}{(g.get('why') or '').rstrip()}"
            return Event(t, kind.key, source, g.get("node") or "", what,
                         g.get("on") or host, message.strip()[:300])
    return None


def parse_journal(text: str, host: str = "") -> list[Event]:
    """`journalctl -o json` lines (one object a line) as events."""
    events = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        msg = rec.get("MESSAGE")
        if not isinstance(msg, str):  # journald gives non-UTF-8 messages as byte lists
            continue
        ev = match(rec.get("SYSLOG_IDENTIFIER", ""), msg,
                   int(rec.get("__REALTIME_TIMESTAMP", 0)) / 1e6, host)
        if ev:
            events.append(ev)
    return events


_SWITCH_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3}) (.*)$")


def parse_switch_log(text: str) -> list[Event]:
    """The fence switch's log (`halab.fenced.log` lines: UTC, milliseconds)."""
    events = []
    for line in text.splitlines():
        m = _SWITCH_STAMP.match(line)
        if not m:
            continue
        stamp = time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        t = calendar.timegm(stamp) + int(m.group(2)) / 1000
        ev = match("switch", m.group(3), t, "host")
        if ev:
            events.append(ev)
    return events


def dedupe(events: Iterable[Event]) -> list[Event]:
    """One event per record: the same line can come from several journals (a DC's
    controld and the acting node's both log a result)."""
    seen: dict[tuple, Event] = {}
    for ev in sorted(events, key=lambda e: e.t):
        key = (ev.kind, ev.node, ev.what, ev.on, round(ev.t, 1))
        seen.setdefault(key, ev)
    return sorted(seen.values(), key=lambda e: e.t)


def phases(events: list[Event], t0: float, victim: str = "") -> dict[str, float]:
    """Seconds from the fault `t0` to the first event of each kind that belongs to the
    recovery: records naming a lost node only for the victim; VIP starts, promotes and
    HAProxy backends coming up only elsewhere (on the victim they are its return).
    Also per VIP (`vip_started:<id>`), resource (`promoted:<id>`) and backend."""
    out: dict[str, float] = {}
    for ev in events:
        if ev.t < t0 or ev.kind == "node_joined":
            continue
        if victim and ev.node and ev.node != victim:
            continue
        if victim and ev.kind in ("vip_started", "promoted") and ev.on == victim:
            continue
        if victim and ev.kind == "backend_up" and ev.what.endswith(f"/{victim}"):
            continue
        dt = round(ev.t - t0, 3)
        out.setdefault(ev.kind, dt)
        if ev.kind in ("vip_started", "promoted", "backend_up") and ev.what:
            out.setdefault(f"{ev.kind}:{ev.what}", dt)
    return out


def aborts(events: list[Event], t0: float, until: float) -> list[dict]:
    return [{"t": round(e.t - t0, 3), "why": e.what} for e in events
            if e.kind == "aborted" and t0 <= e.t <= until]


def journal_command(since: float, until: float | None = None) -> str:
    idents = " ".join(f"-t {i}" for i in IDENTIFIERS)
    end = f" --until=@{until:.0f}" if until else ""
    return (f"journalctl --no-pager -o json --output-fields=MESSAGE,SYSLOG_IDENTIFIER "
            f"--since=@{since:.0f}{end} {idents}")


def collect(sh: Callable[[str, str], str | None], names: list[str], switch_log: str,
            since: float, until: float | None = None) -> list[Event]:
    """Events from every node whose journal `sh(node, command)` returns (None: not
    reachable) and from the switch's log text, merged on one time axis."""
    events = parse_switch_log(switch_log)
    for name in names:
        out = sh(name, journal_command(since, until))
        if out:
            events += parse_journal(out, name)
    return dedupe(e for e in events if e.t >= since and (until is None or e.t <= until))


def as_json(events: list[Event], t0: float) -> list[dict]:
    return [{**asdict(e), "t": round(e.t - t0, 3)} for e in events]

