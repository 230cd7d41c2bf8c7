#!/usr/bin/python
"""Converge a Pacemaker CIB from declarative data: pcs -f, crm_diff, cibadmin --patch."""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: pcs_cib
short_description: Converge a Pacemaker CIB from declarative data
description:
  - Builds the desired CIB offline with C(pcs -f) on a copy of the live CIB, computes the
    difference with C(crm_diff --no-version) and pushes only that difference with
    C(cibadmin --patch). Idempotent; supports check mode and diff mode.
  - The module OWNS the C(resources), C(constraints), C(rsc_defaults) and C(op_defaults)
    sections. They are emptied and rebuilt from the data, so anything not declared there is
    removed. Exception - constraints whose id starts with C(cli-) (temporary
    C(pcs resource move/ban)) are kept, unless a resource they refer to is no longer declared.
  - C(crm_config) and C(nodes) are NOT owned. Declared cluster properties and node attributes
    are set on top of what is there; undeclared ones are left alone. Set a value to the empty
    string to remove a property or node attribute.
  - Other sections (fencing-topology, alerts, acls, tags) are left untouched.
  - Commands run in a fixed order so generated ids are stable - properties, resource defaults,
    op defaults, node attributes, stonith, resources (in list order, clones created inline),
    groups, location, colocation, order constraints.
  - Values of option keys containing C(passw), C(secret), C(key) or C(token) are treated as
    secrets - masked in error messages, returned commands and the diff.
  - Must run on one cluster node (C(run_once)) with pcs and pacemaker installed.
options:
  properties:
    description: Cluster properties (C(pcs property set)); string to string.
    type: dict
    default: {}
  resource_defaults:
    description: Resource defaults (C(pcs resource defaults update)).
    type: dict
    default: {}
  op_defaults:
    description: Operation defaults (C(pcs resource op defaults update)).
    type: dict
    default: {}
  node_attributes:
    description:
      - Permanent node attributes, node name to a dict of attributes.
      - The node must already be in the CIB C(nodes) section (it has joined the cluster).
    type: dict
    default: {}
  resources:
    description:
      - Primitive resources, created in list order with C(pcs resource create).
      - Keys - C(id) (required), C(agent) (required, e.g. C(ocf:heartbeat:IPaddr2)),
        C(options) (dict), C(meta) (dict), C(ops) (list of dicts with C(action) plus op
        attributes), C(clone) or C(promotable) (dict with optional C(id), default
        C(<id>-clone), and C(meta)), C(force) (bool, pass C(--force), e.g. for an agent
        whose metadata is not available), C(no_default_ops) (bool).
    type: list
    elements: dict
    default: []
  groups:
    description:
      - Groups of declared, uncloned resources. Keys - C(id), C(resources) (list of ids,
        in order), C(meta) (dict), C(clone) or C(promotable) (as for resources).
    type: list
    elements: dict
    default: []
  stonith:
    description:
      - Fence devices, created with C(pcs stonith create). Keys as for resources, without
        C(clone)/C(promotable); C(agent) is the fence agent name, e.g. C(fence_ipmilan).
    type: list
    elements: dict
    default: []
  constraints:
    description:
      - Dict with optional lists C(location), C(colocation), C(order).
      - C(location) - C(resource), exactly one of C(node) or C(rule) (pcs rule expression,
        shell-style quoting for values with spaces), C(score) (default C(INFINITY)),
        C(resource_discovery), C(role) (rule only), C(id).
      - C(colocation) - C(resource), C(with), C(score) (default C(INFINITY)), C(role),
        C(with_role) (Started, Stopped, Promoted, Unpromoted), C(id).
      - C(order) - C(first), C(then), C(first_action), C(then_action) (start, stop, promote,
        demote; default start), C(kind) (Optional, Mandatory, Serialize), C(symmetrical)
        (bool), C(id).
      - Without C(id) pcs generates one (deterministic).
    type: dict
    default: {}
  force:
    description: Pass C(--force) to every pcs command (e.g. custom cluster properties).
    type: bool
    default: false
  no_default_ops:
    description: Pass C(--no-default-ops) to resource and stonith creation (per-entry override).
    type: bool
    default: false
  remove_all:
    description:
      - Let a run that declares no resources, groups or fence devices delete every one the
        live CIB holds. Without it such a run fails and changes nothing, so that an empty
        or misspelt variable cannot empty a running cluster.
    type: bool
    default: false
  pcs_path:
    description: pcs executable.
    type: str
    default: pcs
  cib_file:
    description:
      - Work on this CIB file instead of the live cluster (tests). The patch is applied with
        C(cibadmin --patch) and C(CIB_file) set.
    type: path
notes:
  - Values may be strings, numbers or booleans; booleans become C(true)/C(false).
  - Default operations come from the agent metadata on the node running the module, so a
    resource-agents upgrade that changes them shows up as a change.
  - The module disables Ansible's journal logging of its arguments (they may hold passwords).
"""

EXAMPLES = r"""
- name: Converge the cluster configuration
  pcs_cib:
    properties:
      stonith-enabled: "false"
      no-quorum-policy: stop
    resource_defaults:
      resource-stickiness: INFINITY
    op_defaults:
      timeout: 120s
    node_attributes:
      overcloud-controller-0:
        haproxy-role: "true"
    resources:
      - id: ip-203.0.113.100
        agent: ocf:heartbeat:IPaddr2
        options: {ip: 203.0.113.100, cidr_netmask: "32", nic: ext0}
        meta: {resource-stickiness: INFINITY}
        ops:
          - {action: monitor, interval: 10s, timeout: 20s}
      - id: haproxy
        agent: systemd:haproxy
        clone: {id: haproxy-clone, meta: {interleave: "true"}}
      - id: redis
        agent: ocf:heartbeat:redis
        options: {wait_last_known_master: "true"}
        promotable:
          id: redis-master
          meta: {promoted-max: "1", notify: "true", ordered: "true", interleave: "true"}
    stonith:
      - id: fence-n0
        agent: fence_ipmilan
        options: {ip: 192.0.2.10, username: admin, password: "{{ vault_ipmi_password }}"}
    constraints:
      location:
        - {resource: haproxy-clone, rule: "haproxy-role eq true", score: "0",
           resource_discovery: exclusive}
        - {resource: fence-n0, node: overcloud-controller-0, score: "-INFINITY"}
      colocation:
        - {resource: ip-203.0.113.100, with: haproxy-clone, score: INFINITY}
      order:
        - {first: ip-203.0.113.100, then: haproxy-clone, kind: Optional}
  run_once: true
"""

RETURN = r"""
commands:
  description: pcs commands used to build the desired CIB, secrets masked.
  returned: always
  type: list
  elements: str
diff:
  description: Pretty XML of the configuration before and after (volatile attributes dropped).
  returned: in diff mode
  type: dict
"""

MASK = "********"
SECRET_KEY_RE = re.compile(r"passw|secret|key|token", re.IGNORECASE)
# Masking these everywhere would garble output; no real secret looks like them.
_NOT_SECRET_VALUES = frozenset({"", "true", "false", "yes", "no", "on", "off", "0", "1"})
# Root attributes that change on every write or with cluster state.
VOLATILE_ATTRS = frozenset(
    {
        "epoch",
        "num_updates",
        "admin_epoch",
        "cib-last-written",
        "update-origin",
        "update-client",
        "update-user",
        "have-quorum",
        "dc-uuid",
        "execution-date",
    }
)
ROLES = ("Started", "Stopped", "Promoted", "Unpromoted")
ACTIONS = ("start", "stop", "promote", "demote")
KINDS = ("Optional", "Mandatory", "Serialize")
CLI_PREFIX = "cli-"

TOP_KEYS = frozenset(
    {
        "properties",
        "resource_defaults",
        "op_defaults",
        "node_attributes",
        "resources",
        "groups",
        "stonith",
        "constraints",
        "force",
        "no_default_ops",
        "remove_all",
        "pcs_path",
        "cib_file",
    }
)
PRIMITIVE_KEYS = frozenset({"id", "agent", "options", "meta", "ops", "force", "no_default_ops"})
RESOURCE_KEYS = PRIMITIVE_KEYS | {"clone", "promotable"}
CLONE_KEYS = frozenset({"id", "meta"})
GROUP_KEYS = frozenset({"id", "resources", "meta", "clone", "promotable"})
LOCATION_KEYS = frozenset({"id", "resource", "node", "rule", "score", "resource_discovery", "role"})
COLOCATION_KEYS = frozenset({"id", "resource", "with", "score", "role", "with_role"})
ORDER_KEYS = frozenset(
    {"id", "first", "then", "first_action", "then_action", "kind", "symmetrical"}
)
CONSTRAINT_KEYS = {"location": LOCATION_KEYS, "colocation": COLOCATION_KEYS, "order": ORDER_KEYS}

ARGUMENT_SPEC: dict[str, Any] = {
    "properties": {"type": "dict", "default": {}},
    "resource_defaults": {"type": "dict", "default": {}},
    "op_defaults": {"type": "dict", "default": {}},
    "node_attributes": {"type": "dict", "default": {}},
    "resources": {"type": "list", "elements": "dict", "default": []},
    "groups": {"type": "list", "elements": "dict", "default": []},
    "stonith": {"type": "list", "elements": "dict", "default": []},
    "constraints": {"type": "dict", "default": {}},
    "force": {"type": "bool", "default": False},
    "no_default_ops": {"type": "bool", "default": False},
    "remove_all": {"type": "bool", "default": False},
    "pcs_path": {"type": "str", "default": "pcs"},
    "cib_file": {"type": "path"},
}


class CibError(Exception):
    """A failure whose message is already free of secrets."""


# ---------------------------------------------------------------- secrets


def secret_values(data: Any) -> set[str]:
    """Values under secret-looking keys anywhere in data (robust to unvalidated input)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str) and SECRET_KEY_RE.search(k) and _is_scalar(v):
                    s = _to_str(v)
                    if s.lower() not in _NOT_SECRET_VALUES:
                        found.add(s)
                walk(v)
        elif isinstance(node, (list, tuple)):
            for item in node:
                walk(item)

    walk(data)
    return found


def mask_args(args: list[str]) -> list[str]:
    """Replace the value of secret-looking k=v arguments."""
    out = []
    for arg in args:
        key, sep, _ = arg.partition("=")
        out.append(f"{key}={MASK}" if sep and SECRET_KEY_RE.search(key) else arg)
    return out


def scrub(text: str, secrets: set[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, MASK)
    return text


# ---------------------------------------------------------------- validation


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool))


def _to_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _to_bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(v, str) and v.lower() in ("false", "no", "off", "0"):
        return False
    return None


class _Validator:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def err(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    def keys(self, entry: Any, where: str, allowed: frozenset[str]) -> bool:
        if not isinstance(entry, dict):
            self.err(where, "must be a mapping")
            return False
        unknown = sorted(str(k) for k in set(entry) - allowed)
        if unknown:
            self.err(
                where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
            )
        return True

    def name(self, entry: dict, key: str, where: str, required: bool = True) -> str | None:
        v = entry.get(key)
        if v is None:
            if required:
                self.err(where, f"missing '{key}'")
            return None
        if not isinstance(v, str) or not v.strip():
            self.err(where, f"'{key}' must be a non-empty string")
            return None
        return v

    def kv(self, value: Any, where: str) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.err(where, "must be a mapping of name to value")
            return {}
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k:
                self.err(where, f"bad name {k!r}")
            elif not _is_scalar(v):
                self.err(where, f"'{k}' must be a string, number or boolean")
            else:
                out[k] = _to_str(v)
        return out

    def flag(self, entry: dict, key: str, where: str, default: bool) -> bool:
        if entry.get(key) is None:
            return default
        b = _to_bool(entry[key])
        if b is None:
            self.err(where, f"'{key}' must be a boolean")
            return default
        return b

    def choice(self, entry: dict, key: str, where: str, choices: tuple[str, ...]) -> str | None:
        v = self.name(entry, key, where, required=False)
        if v is not None and v not in choices:
            self.err(where, f"'{key}' must be one of {', '.join(choices)}, not {v!r}")
            return None
        return v

    def entries(self, value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.err(where, "must be a list")
            return []
        return value


def _label(section: str, i: int, entry: Any, key: str = "id") -> str:
    if isinstance(entry, dict) and isinstance(entry.get(key), str):
        return f"{section}[{i}] ({key}={entry[key]})"
    return f"{section}[{i}]"


def _clone_spec(v: _Validator, entry: dict, where: str, owner: str) -> dict | None:
    kinds = [k for k in ("clone", "promotable") if entry.get(k) is not None]
    if not kinds:
        return None
    if len(kinds) == 2:
        v.err(where, "use either 'clone' or 'promotable', not both")
        return None
    kind = kinds[0]
    spec = entry[kind]
    if spec is True or spec == {}:
        spec = {}
    cwhere = f"{where}.{kind}"
    if not v.keys(spec, cwhere, CLONE_KEYS):
        return None
    cid = v.name(spec, "id", cwhere, required=False)
    return {
        "kind": kind,
        "id": cid or f"{owner}-clone",
        "explicit_id": cid,
        "meta": v.kv(spec.get("meta"), f"{cwhere}.meta"),
    }


# Operation names Pacemaker runs; anything else after pcs' `op` would be read as one of
# its keywords (`meta`, `clone`, ...) or an unknown action.
OP_ACTIONS = frozenset({"start", "stop", "monitor", "promote", "demote", "notify", "reload",
                        "reload-agent", "migrate_to", "migrate_from", "validate-all",
                        "meta-data", "status"})


def _primitive(
    v: _Validator, entry: dict, where: str, keys: frozenset[str], force: bool, no_default_ops: bool
) -> dict | None:
    if not v.keys(entry, where, keys):
        return None
    rid = v.name(entry, "id", where)
    agent = v.name(entry, "agent", where)
    ops = []
    for j, op in enumerate(v.entries(entry.get("ops"), f"{where}.ops")):
        owhere = f"{where}.ops[{j}]"
        if not isinstance(op, dict):
            v.err(owhere, "must be a mapping")
            continue
        action = v.name(op, "action", owhere)
        attrs = v.kv({k: x for k, x in op.items() if k != "action"}, owhere)
        if action and action not in OP_ACTIONS:
            v.err(owhere, f"unknown action '{action}'; one of {', '.join(sorted(OP_ACTIONS))}")
        elif action:
            ops.append((action, attrs))
    spec = {
        "id": rid,
        "agent": agent,
        "options": v.kv(entry.get("options"), f"{where}.options"),
        "meta": v.kv(entry.get("meta"), f"{where}.meta"),
        "ops": ops,
        "force": v.flag(entry, "force", where, force),
        "no_default_ops": v.flag(entry, "no_default_ops", where, no_default_ops),
        "clone": _clone_spec(v, entry, where, rid or "") if "clone" in keys else None,
    }
    return spec if rid and agent else None


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise module parameters; raise CibError naming every bad entry."""
    v = _Validator()
    unknown = sorted(set(params) - TOP_KEYS)
    if unknown:
        v.err("options", f"unknown option(s) {', '.join(unknown)}")
    force = bool(_to_bool(params.get("force")) or False)
    no_default_ops = bool(_to_bool(params.get("no_default_ops")) or False)

    spec: dict[str, Any] = {
        "force": force,
        "remove_all": bool(_to_bool(params.get("remove_all")) or False),
        "pcs_path": params.get("pcs_path") or "pcs",
        "cib_file": params.get("cib_file"),
        "properties": v.kv(params.get("properties"), "properties"),
        "resource_defaults": v.kv(params.get("resource_defaults"), "resource_defaults"),
        "op_defaults": v.kv(params.get("op_defaults"), "op_defaults"),
        "node_attributes": {},
    }
    nattrs = params.get("node_attributes") or {}
    if not isinstance(nattrs, dict):
        v.err("node_attributes", "must be a mapping of node name to attributes")
    else:
        for node, attrs in nattrs.items():
            spec["node_attributes"][str(node)] = v.kv(attrs, f"node_attributes[{node}]")

    ids: dict[str, str] = {}  # id -> where it was declared

    def claim(obj_id: str | None, where: str) -> None:
        if not obj_id:
            return
        if obj_id in ids:
            v.err(where, f"id '{obj_id}' already used by {ids[obj_id]}")
        else:
            ids[obj_id] = where

    def section_primitives(section: str, keys: frozenset) -> Iterator[tuple[dict, str]]:
        """The valid primitives of a section with where each was declared, each id
        claimed as it is yielded (a clone's id right after its primitive's)."""
        for i, entry in enumerate(v.entries(params.get(section), section)):
            where = _label(section, i, entry)
            p = _primitive(v, entry, where, keys, force, no_default_ops)
            if p:
                claim(p["id"], where)
                yield p, where

    primitives: dict[str, dict] = {}
    cloned: dict[str, str] = {}  # primitive or group id -> its clone id
    resources = []
    for p, where in section_primitives("resources", RESOURCE_KEYS):
        primitives[p["id"]] = p
        if p["clone"]:
            claim(p["clone"]["id"], where)
            cloned[p["id"]] = p["clone"]["id"]
        resources.append(p)
    spec["resources"] = resources
    spec["stonith"] = [p for p, _ in section_primitives("stonith", PRIMITIVE_KEYS)]

    groups = []
    grouped: dict[str, str] = {}
    for i, entry in enumerate(v.entries(params.get("groups"), "groups")):
        where = _label("groups", i, entry)
        if not v.keys(entry, where, GROUP_KEYS):
            continue
        gid = v.name(entry, "id", where)
        members = v.entries(entry.get("resources"), f"{where}.resources")
        if not members:
            v.err(where, "'resources' must list at least one resource")
        for m in members:
            if not isinstance(m, str):
                v.err(where, f"member {m!r} must be a resource id")
            elif m not in primitives:
                v.err(where, f"member '{m}' is not a declared resource")
            elif m in cloned:
                v.err(where, f"member '{m}' is cloned; clone the group instead")
            elif m in grouped:
                v.err(where, f"member '{m}' is already in group '{grouped[m]}'")
            else:
                grouped[m] = gid or ""
        clone = _clone_spec(v, entry, where, gid or "")
        if gid:
            claim(gid, where)
            if clone:
                claim(clone["id"], where)
                cloned[gid] = clone["id"]
            groups.append(
                {
                    "id": gid,
                    "resources": [str(m) for m in members],
                    "meta": v.kv(entry.get("meta"), f"{where}.meta"),
                    "clone": clone,
                }
            )
    spec["groups"] = groups

    # Anything a constraint may name.
    known = set(ids)

    def ref(entry: dict, key: str, where: str) -> str | None:
        r = v.name(entry, key, where)
        if r is None:
            return None
        if r not in known:
            v.err(where, f"'{key}' names undeclared resource '{r}'")
        elif r in cloned and not force:
            v.err(where, f"'{key}' names '{r}' which is cloned; use '{cloned[r]}'")
        return r

    cons = params.get("constraints") or {}
    spec["constraints"] = {"location": [], "colocation": [], "order": []}
    if not isinstance(cons, dict):
        v.err("constraints", "must be a mapping with location/colocation/order lists")
        cons = {}
    for kind in sorted(set(cons) - set(CONSTRAINT_KEYS)):
        v.err("constraints", f"unknown constraint type '{kind}'")
    for kind, allowed in CONSTRAINT_KEYS.items():
        for i, entry in enumerate(v.entries(cons.get(kind), f"constraints.{kind}")):
            where = _label(
                f"constraints.{kind}", i, entry, "first" if kind == "order" else "resource"
            )
            if not v.keys(entry, where, allowed):
                continue
            cid = v.name(entry, "id", where, required=False)
            if cid and cid.startswith(CLI_PREFIX):
                v.err(where, f"ids starting with '{CLI_PREFIX}' are reserved for pcs move/ban")
            claim(cid, where)
            c: dict[str, Any] = {"id": cid}
            if kind == "location":
                c["resource"] = ref(entry, "resource", where)
                c["node"] = v.name(entry, "node", where, required=False)
                rule = entry.get("rule")
                if rule is not None and (not isinstance(rule, str) or not rule.strip()):
                    v.err(where, "'rule' must be a non-empty string")
                    rule = None
                c["rule"] = rule
                if (c["node"] is None) == (rule is None):
                    v.err(where, "give exactly one of 'node' or 'rule'")
                if rule is not None:
                    try:
                        c["rule_args"] = shlex.split(rule)
                    except ValueError as e:
                        v.err(where, f"cannot parse rule: {e}")
                c["score"] = v.kv({"score": entry.get("score", "INFINITY")}, where).get("score")
                c["resource_discovery"] = v.choice(
                    entry, "resource_discovery", where, ("always", "never", "exclusive")
                )
                c["role"] = v.choice(entry, "role", where, ROLES)
                if c["role"] and c["node"] is not None:
                    v.err(where, "'role' is only supported with 'rule'")
            elif kind == "colocation":
                c["resource"] = ref(entry, "resource", where)
                c["with"] = ref(entry, "with", where)
                c["score"] = v.kv({"score": entry.get("score", "INFINITY")}, where).get("score")
                c["role"] = v.choice(entry, "role", where, ROLES)
                c["with_role"] = v.choice(entry, "with_role", where, ROLES)
            else:
                c["first"] = ref(entry, "first", where)
                c["then"] = ref(entry, "then", where)
                c["first_action"] = v.choice(entry, "first_action", where, ACTIONS) or "start"
                c["then_action"] = v.choice(entry, "then_action", where, ACTIONS) or "start"
                c["kind"] = v.choice(entry, "kind", where, KINDS)
                c["symmetrical"] = (
                    None
                    if entry.get("symmetrical") is None
                    else v.flag(entry, "symmetrical", where, True)
                )
            spec["constraints"][kind].append(c)

    if v.errors:
        raise CibError("invalid pcs_cib data:\n  " + "\n  ".join(v.errors))
    return spec


# ---------------------------------------------------------------- commands


def _pairs(d: dict[str, str]) -> list[str]:
    return [f"{k}={val}" for k, val in d.items()]


def _create_args(p: dict, command: str) -> list[str]:
    args = [command, "create", p["id"], p["agent"], *_pairs(p["options"])]
    if p["ops"]:
        args.append("op")
        for action, attrs in p["ops"]:
            args += [action, *_pairs(attrs)]
    if p["meta"]:
        args += ["meta", *_pairs(p["meta"])]
    clone = p.get("clone")
    if clone:
        args.append(clone["kind"])
        if clone["explicit_id"]:
            args.append(clone["explicit_id"])
        args += _pairs(clone["meta"])
    return args


def _sanitize_id(candidate: str) -> str:
    """pcs's own id sanitiser, so explicit and generated location ids agree."""
    if not candidate:
        return candidate
    first = "" if re.match(r"[^a-zA-Z_]", candidate[0]) else candidate[0]
    return first + re.sub(r"[^a-zA-Z0-9_.-]", "", candidate[1:])


def _constraint_args(kind: str, c: dict) -> list[str]:
    if kind == "location":
        if c["node"] is not None:
            cid = c["id"] or _sanitize_id(f"location-{c['resource']}-{c['node']}-{c['score']}")
            args = ["constraint", "location", "add", cid, c["resource"], c["node"], c["score"]]
            if c["resource_discovery"]:
                args.append(f"resource-discovery={c['resource_discovery']}")
            return args
        args = ["constraint", "location", c["resource"], "rule"]
        if c["resource_discovery"]:
            args.append(f"resource-discovery={c['resource_discovery']}")
        if c["role"]:
            args.append(f"role={c['role']}")
        if c["id"]:
            args.append(f"constraint-id={c['id']}")
        return [*args, f"score={c['score']}", *c["rule_args"]]
    if kind == "colocation":
        args = ["constraint", "colocation", "add"]
        if c["role"]:
            args.append(c["role"])
        args += [c["resource"], "with"]
        if c["with_role"]:
            args.append(c["with_role"])
        args += [c["with"], c["score"]]
        return args + ([f"id={c['id']}"] if c["id"] else [])
    args = [
        "constraint",
        "order",
        c["first_action"],
        c["first"],
        "then",
        c["then_action"],
        c["then"],
    ]
    if c["kind"]:
        args.append(f"kind={c['kind']}")
    if c["symmetrical"] is not None:
        args.append(f"symmetrical={'true' if c['symmetrical'] else 'false'}")
    return args + ([f"id={c['id']}"] if c["id"] else [])


# ---------------------------------------------------------------- XML helpers


def parse_xml(text: str, what: str) -> ET.Element:
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))
    try:
        root = ET.fromstring(text, parser=parser)
    except ET.ParseError as e:
        raise CibError(f"{what} is not valid XML: {e}") from e
    if root.tag != "cib" or root.find("configuration") is None:
        raise CibError(f"{what} is not a CIB (no <cib><configuration>)")
    return root


def _write(root: ET.Element, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(ET.tostring(root, encoding="unicode"))


def _clear(el: ET.Element | None) -> None:
    if el is not None:
        for child in list(el):
            el.remove(child)


def _refs(el: ET.Element) -> set[str]:
    out = set()
    for node in el.iter():
        for attr in ("rsc", "with-rsc", "first", "then"):
            if node.get(attr):
                out.add(node.get(attr))
        if node.tag == "resource_ref" and node.get("id"):
            out.add(node.get("id"))
    return out


def pretty(root: ET.Element) -> str:
    """Stable, secret-free rendering of <cib> attributes and the configuration section."""
    cib = ET.Element("cib", {k: val for k, val in root.attrib.items() if k not in VOLATILE_ATTRS})
    cib.append(copy.deepcopy(root.find("configuration")))
    for el in cib.iter():
        if el.text is not None and not el.text.strip():
            el.text = None
        if el.tail is not None and not el.tail.strip():
            el.tail = None
        if el.tag == "nvpair" and SECRET_KEY_RE.search(el.get("name", "")):
            el.set("value", MASK)
    ET.indent(cib, space="  ")
    return ET.tostring(cib, encoding="unicode") + "\n"


def _has_nvpair(parent: ET.Element | None, path: str, name: str) -> bool:
    return parent is not None and any(nv.get("name") == name for nv in parent.iterfind(path))


def _node(root: ET.Element, uname: str) -> ET.Element | None:
    for node in root.iterfind("configuration/nodes/node"):
        if node.get("uname") == uname:
            return node
    return None


# ---------------------------------------------------------------- converge


class _Converger:
    def __init__(self, spec: dict[str, Any], workdir: str) -> None:
        self.spec = spec
        self.secrets = secret_values(spec)
        self.live = os.path.join(workdir, "live.xml")
        self.desired = os.path.join(workdir, "desired.xml")
        self.patch = os.path.join(workdir, "patch.xml")
        self.commands: list[str] = []
        self.warnings: list[str] = []
        env = dict(os.environ)
        env.pop("CIB_file", None)  # only ever set explicitly
        self.env = env

    def _exec(
        self, cmd: list[str], env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, env=env or self.env, check=False
            )
        except OSError as e:
            raise CibError(f"cannot run {cmd[0]}: {e}") from e

    def _fail(self, what: str, cmd: list[str], proc: subprocess.CompletedProcess) -> CibError:
        out = proc.stderr.strip() or proc.stdout.strip()
        msg = f"{what} failed (rc={proc.returncode}): {shlex.join(mask_args(cmd))}\n{out}"
        return CibError(scrub(msg, self.secrets))

    def pcs(self, args: list[str], force: bool = False, no_default_ops: bool = False) -> None:
        flags = (["--force"] if force or self.spec["force"] else []) + (
            ["--no-default-ops"] if no_default_ops else []
        )
        # Flags before "--", so values such as -INFINITY are never taken for options.
        cmd = [self.spec["pcs_path"], "-f", self.desired, *flags, "--", *args]
        shown = ["pcs", "-f", "desired.xml", *flags, "--", *args]
        self.commands.append(scrub(shlex.join(mask_args(shown)), self.secrets))
        proc = self._exec(cmd)
        if proc.returncode != 0:
            raise self._fail("pcs command", shown, proc)

    def read_live(self) -> ET.Element:
        cib_file = self.spec["cib_file"]
        if cib_file:
            try:
                with open(cib_file, encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                raise CibError(f"cannot read cib_file: {e}") from e
        else:
            cmd = ["cibadmin", "--query"]
            proc = self._exec(cmd)
            if proc.returncode != 0:
                raise self._fail("reading the CIB", cmd, proc)
            text = proc.stdout
        root = parse_xml(text, "live CIB")
        # Runtime state is not ours and only slows pcs down; both sides drop it.
        status = root.find("status")
        if status is not None:
            _clear(status)
        return root

    def own_sections(self, root: ET.Element) -> list[ET.Element]:
        """Empty the owned sections; return the operator's cli- constraints."""
        conf = root.find("configuration")
        for tag in ("resources", "constraints"):
            if conf.find(tag) is None:
                ET.SubElement(conf, tag)
        _clear(conf.find("resources"))
        cons = conf.find("constraints")
        kept = [c for c in cons if str(c.get("id", "")).startswith(CLI_PREFIX)]
        _clear(cons)
        # Emptied in place so a re-created section keeps its position.
        _clear(conf.find("rsc_defaults"))
        _clear(conf.find("op_defaults"))
        return kept

    def check_nodes(self, root: ET.Element) -> None:
        missing = sorted(n for n in self.spec["node_attributes"] if _node(root, n) is None)
        if missing:
            raise CibError(
                f"node_attributes: node(s) {', '.join(missing)} not in the CIB <nodes> "
                "section (has the node joined the cluster?)"
            )

    def build(self, root: ET.Element) -> None:
        s = self.spec
        bootstrap = root.find(
            "configuration/crm_config/cluster_property_set[@id='cib-bootstrap-options']"
        )
        props = [
            f"{k}={val}"
            for k, val in sorted(s["properties"].items())
            if val or _has_nvpair(bootstrap, "nvpair", k)
        ]  # "" removes, only if present
        if props:
            self.pcs(["property", "set", *props])
        for command, values in (
            (["resource", "defaults", "update"], s["resource_defaults"]),
            (["resource", "op", "defaults", "update"], s["op_defaults"]),
        ):
            pairs = [f"{k}={val}" for k, val in sorted(values.items()) if val]
            if pairs:
                self.pcs([*command, *pairs])
        for node, attrs in sorted(s["node_attributes"].items()):
            el = _node(root, node)
            pairs = [
                f"{k}={val}"
                for k, val in sorted(attrs.items())
                if val or _has_nvpair(el, "instance_attributes/nvpair", k)
            ]
            if pairs:
                self.pcs(["node", "attribute", node, *pairs])
        for p in s["stonith"]:
            self.pcs(_create_args(p, "stonith"), p["force"], p["no_default_ops"])
        for p in s["resources"]:
            self.pcs(_create_args(p, "resource"), p["force"], p["no_default_ops"])
        for g in s["groups"]:
            self.pcs(["resource", "group", "add", g["id"], *g["resources"]])
            if g["meta"]:
                self.pcs(["resource", "meta", g["id"], *_pairs(g["meta"])])
            clone = g["clone"]
            if clone:
                self.pcs(
                    [
                        "resource",
                        clone["kind"],
                        g["id"],
                        *([clone["explicit_id"]] if clone["explicit_id"] else []),
                        *_pairs(clone["meta"]),
                    ]
                )
        for kind in ("location", "colocation", "order"):
            for c in s["constraints"][kind]:
                self.pcs(_constraint_args(kind, c))

    def finish(self, kept: list[ET.Element]) -> ET.Element:
        with open(self.desired, encoding="utf-8") as f:
            root = parse_xml(f.read(), "desired CIB")
        conf = root.find("configuration")
        for tag in ("rsc_defaults", "op_defaults"):
            el = conf.find(tag)
            if el is not None and len(el) == 0:
                conf.remove(el)
        rsc_ids = {el.get("id") for el in conf.find("resources").iter() if el.get("id")}
        cons = conf.find("constraints")
        for c in kept:
            missing = sorted(_refs(c) - rsc_ids)
            if missing:
                self.warnings.append(
                    f"dropping constraint {c.get('id')}: resource(s) {', '.join(missing)} "
                    "no longer declared"
                )
            else:
                c.tail = None
                cons.append(c)
        _write(root, self.desired)
        return root

    def diff(self) -> str | None:
        cmd = ["crm_diff", "--original", self.live, "--new", self.desired, "--no-version"]
        proc = self._exec(cmd)
        if proc.returncode == 0:
            return None
        if proc.returncode == 1 and "<diff" in proc.stdout:
            return proc.stdout
        raise self._fail("crm_diff", cmd, proc)

    def push(self, patch: str) -> None:
        with open(self.patch, "w", encoding="utf-8") as f:
            f.write(patch)
        cmd = ["cibadmin", "--patch", "--xml-file", self.patch]
        env = self.env
        if self.spec["cib_file"]:
            env = dict(self.env, CIB_file=self.spec["cib_file"])
        proc = self._exec(cmd, env)
        if proc.returncode != 0:
            raise self._fail("cibadmin --patch", cmd, proc)


def run(
    params: dict[str, Any], check_mode: bool = False, want_diff: bool = False
) -> dict[str, Any]:
    """Converge; return changed/commands/warnings (+diff). Raises CibError."""
    spec = validate(params)
    with tempfile.TemporaryDirectory(prefix="pcs_cib-") as workdir:
        c = _Converger(spec, workdir)
        live = c.read_live()
        c.check_nodes(live)
        declared = spec["resources"] or spec["groups"] or spec["stonith"]
        section = live.find("configuration/resources")
        held = [el.get("id") for el in section] if section is not None else []
        if held and not declared and not spec["remove_all"]:
            raise CibError(
                f"no resources, groups or fence devices declared: that would delete all "
                f"{len(held)} in the live CIB ({', '.join(held[:5])}"
                f"{', ...' if len(held) > 5 else ''}); set remove_all: true to mean it")
        _write(live, c.live)
        desired = copy.deepcopy(live)
        kept = c.own_sections(desired)
        _write(desired, c.desired)
        c.build(desired)
        desired = c.finish(kept)
        patch = c.diff()
        if patch is not None and not check_mode:
            c.push(patch)
        result: dict[str, Any] = {
            "changed": patch is not None,
            "commands": c.commands,
            "warnings": c.warnings,
        }
        if want_diff:
            result["diff"] = {"before": pretty(live), "after": pretty(desired)}
        return result


def main() -> None:
    # no_log: the arguments may hold fence passwords; keep them out of the journal.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, no_log=True)
    module.no_log_values.update(secret_values(module.params))
    try:
        result = run(module.params, check_mode=module.check_mode, want_diff=module._diff)
    except CibError as e:
        module.fail_json(msg=str(e))
    for w in result.pop("warnings"):
        module.warn(w)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
