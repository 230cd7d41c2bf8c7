"""The cluster as crm_mon shows it, reduced to what health gates and failover
measurements look at. Pure functions of crm_mon's XML: the tests, the failover
scenarios and `halab status` share them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

CRM_MON = "crm_mon --one-shot --output-as=xml"
# The DC's controller state: S_IDLE when no transition runs. crm_mon shows a resource
# being started as started; a fault injected then waits for that action to end before
# the cluster even requests fencing (seen: a RabbitMQ start on a rejoining node held a
# power loss's recovery for 78 s).
DC_STATE = 'crmadmin --quiet --status="$(crmadmin --quiet --dc_lookup 2>&1)" 2>&1'


def dc_idle(text: str) -> bool:
    return text.strip().endswith("S_IDLE")


def owner(root: ET.Element, res: ET.Element) -> str:
    """A clone or group id for members of one, else the resource's own id."""
    for container in list(root.iter("clone")) + list(root.iter("group")):
        if res in list(container.iter("resource")):
            return container.get("id")
    return res.get("id")


def state(xml_text: str) -> dict:
    root = ET.fromstring(xml_text)
    dc = root.find("summary/current_dc")
    st = {
        "dc": dc.get("name") if dc is not None and dc.get("present") == "true" else None,
        "quorum": dc is not None and dc.get("with_quorum") == "true",
        "online": {n.get("name") for n in root.iter("node")
                   if n.get("online") == "true" and n.get("standby") != "true"},
        "standby": {n.get("name") for n in root.iter("node") if n.get("standby") == "true"},
        "failures": [f.attrib for f in root.iter("failure")],
        # member name -> "online"/"offline", " standby" appended: what a person scans
        "members": {n.get("name"): ("online" if n.get("online") == "true" else "offline")
                    + (" standby" if n.get("standby") == "true" else "")
                    for n in root.iter("node") if n.get("type") == "member"},
        "started": {},  # resource or clone id -> nodes (one entry per active instance)
        "roles": {},  # resource or clone id -> role -> nodes (active instances)
        "instances": {},  # the same for every instance, "Stopped" on "-" included
    }
    for res in root.iter("resource"):
        rid = owner(root, res)
        where = [n.get("name") for n in res.iter("node")]
        every = st["instances"].setdefault(rid, {}).setdefault(res.get("role", "Stopped"), [])
        every.extend(where or ["-"])
        if res.get("active") != "true" or res.get("failed") == "true":
            continue
        st["started"].setdefault(rid, []).extend(where)
        st["roles"].setdefault(rid, {}).setdefault(res.get("role"), []).extend(where)
    return st


def unhealthy(st: dict, hostvars: dict, names: set[str]) -> str | None:
    """Why `st` is not the declared steady state (every node online, every clone
    everywhere, every primitive once, promotable sets as declared, each fence device
    away from its target, no failed actions); None when it is."""
    if not st["quorum"]:
        return "no quorum"
    if st["online"] != names:
        return f"online: {sorted(st['online'])}"
    if st["failures"]:
        return f"failed actions: {len(st['failures'])}"
    for rsc in hostvars["pacemaker_resources"]:
        clone = rsc.get("clone") or rsc.get("promotable")
        rid = clone["id"] if clone else rsc["id"]
        where = st["started"].get(rid, [])
        if clone and sorted(where) != sorted(names):
            return f"{rid} on {sorted(where)}"
        if not clone and len(where) != 1:
            return f"{rid} on {where}"
        if rsc.get("promotable"):
            want = min(int(rsc["promotable"]["meta"].get("promoted-max", 1)), len(names))
            roles = st["roles"][rid]
            if len(roles.get("Promoted", [])) != want or set(roles) - {"Promoted", "Unpromoted"}:
                return f"{rid} roles {roles}"
    for dev in hostvars.get("pacemaker_stonith", []):
        where = st["started"].get(dev["id"], [])
        if len(where) != 1 or where[0] == dev["options"].get("pcmk_host_list"):
            return f"{dev['id']} on {where}"
    return None


def fence_events(xml_text: str) -> list[dict]:
    """`stonith_admin --history <node> --verbose --output-as=xml` as dicts, with
    `completed` also as epoch seconds in `at` (the nodes keep UTC)."""
    import calendar
    import time

    events = []
    for e in ET.fromstring(xml_text).iter("fence_event"):
        ev = dict(e.attrib)
        if ev.get("completed"):
            ev["at"] = calendar.timegm(time.strptime(ev["completed"], "%Y-%m-%d %H:%M:%SZ"))
        events.append(ev)
    return events


def fence_history_command(target: str) -> str:
    # --verbose: without it only the latest action shows
    return f"stonith_admin --history {target} --verbose --output-as=xml"


def fenced_since(xml_text: str, since: float, status: str = "success") -> list[dict]:
    """The fence events with `status` completed (to the second) at or after `since`."""
    return [e for e in fence_events(xml_text)
            if e.get("status") == status and e.get("at", 0) >= int(since)]
