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
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.validation import check_type_dict
from ansible.module_utils.errors import UnsupportedError

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
    description: Cluster properties (C(pcs property set)), name to value.
    type: dict
    default: {}
  resource_defaults:
    description: Resource defaults (C(pcs resource defaults update)), name to value.
    type: dict
    default: {}
  op_defaults:
    description: Operation defaults (C(pcs resource op defaults update)), name to value.
    type: dict
    default: {}
  node_attributes:
    description:
      - Permanent node attributes, node name to a dict of attribute name to value.
      - The node must already be in the CIB C(nodes) section (it has joined the cluster).
    type: dict
    default: {}
  resources:
    description:
      - Primitive resources, created in list order with C(pcs resource create).
      - Ids of resources, clones, groups, fence devices and constraints must be unique.
    type: list
    elements: dict
    default: []
    suboptions:
      id:
        description: Resource id.
        type: str
        required: true
      agent:
        description: Resource agent, e.g. C(ocf:heartbeat:IPaddr2) or C(systemd:haproxy).
        type: str
        required: true
      options: &options
        description: Instance attributes, name to value.
        type: dict
      meta: &meta
        description: Meta attributes, name to value.
        type: dict
      ops:
        description:
          - Operations, each a dict with C(action) (C(start), C(stop), C(monitor),
            C(promote), C(demote), C(notify), C(reload), C(reload-agent), C(migrate_to),
            C(migrate_from), C(validate-all), C(meta-data) or C(status)) and the
            operation's attributes, e.g. C(interval), C(timeout), C(role), C(on-fail).
        type: list
        elements: dict
      force:
        description:
          - Pass C(--force), e.g. for an agent whose metadata is not available.
          - Unset, the module's I(force) applies.
        type: bool
      no_default_ops:
        description: Pass C(--no-default-ops). Unset, the module's I(no_default_ops) applies.
        type: bool
      clone: &clone
        description: Clone it (created inline). Mutually exclusive with I(promotable).
        type: dict
        suboptions: &clone_options
          id:
            description: Clone id; C(<id>-clone) if unset.
            type: str
          meta:
            description: Meta attributes of the clone, name to value.
            type: dict
      promotable: &promotable
        description: As I(clone), for a promotable clone. Mutually exclusive with I(clone).
        type: dict
        suboptions: *clone_options
  groups:
    description:
      - Groups of declared, uncloned resources, each in at most one group.
    type: list
    elements: dict
    default: []
    suboptions:
      id:
        description: Group id.
        type: str
        required: true
      resources:
        description: Ids of the members (declared in I(resources)), in order; at least one.
        type: list
        elements: str
        required: true
      meta:
        description: Meta attributes of the group, name to value.
        type: dict
      clone: *clone  # the same as a resource's
      promotable: *promotable
  stonith:
    description:
      - Fence devices, created with C(pcs stonith create).
    type: list
    elements: dict
    default: []
    suboptions:
      id:
        description: Fence device id.
        type: str
        required: true
      agent:
        description: Fence agent, e.g. C(fence_ipmilan).
        type: str
        required: true
      options: *options
      meta: *meta
      ops:
        description: Operations, as for I(resources).
        type: list
        elements: dict
      force: &force
        description: Pass C(--force). Unset, the module's I(force) applies.
        type: bool
      no_default_ops: &no_default_ops
        description: Pass C(--no-default-ops). Unset, the module's I(no_default_ops) applies.
        type: bool
  constraints:
    description:
      - Location, colocation and order constraints. Each names declared resources, clones
        or groups; a cloned resource or group by its clone's id (unless I(force)).
      - Without an C(id) pcs generates one (deterministic). Ids starting with C(cli-) are
        reserved for C(pcs resource move/ban).
    type: dict
    default: {}
    suboptions:
      location:
        description: Location constraints.
        type: list
        elements: dict
        suboptions:
          id: &constraint_id
            description: Constraint id.
            type: str
          resource:
            description: The resource constrained.
            type: str
            required: true
          node:
            description: Node name. Exactly one of I(node) or I(rule).
            type: str
          rule:
            description:
              - Pcs rule expression (shell-style quoting for values with spaces).
                Exactly one of I(node) or I(rule).
            type: str
          score: &score
            description: Score.
            type: str
            default: INFINITY
          resource_discovery:
            description: Resource discovery on the nodes.
            type: str
            choices: [always, never, exclusive]
          role:
            description: Role the rule applies to; requires I(rule).
            type: str
            choices: [Started, Stopped, Promoted, Unpromoted]
      colocation:
        description: Colocation constraints.
        type: list
        elements: dict
        suboptions:
          id: *constraint_id
          resource:
            description: The resource placed relative to I(with).
            type: str
            required: true
          with:
            description: The resource I(resource) is placed with.
            type: str
            required: true
          score: *score
          role:
            description: Role of I(resource).
            type: str
            choices: [Started, Stopped, Promoted, Unpromoted]
          with_role:
            description: Role of I(with).
            type: str
            choices: [Started, Stopped, Promoted, Unpromoted]
      order:
        description: Order constraints.
        type: list
        elements: dict
        suboptions:
          id: *constraint_id
          first:
            description: The resource acted on first.
            type: str
            required: true
          then:
            description: The resource acted on after I(first).
            type: str
            required: true
          first_action:
            description: Action of I(first).
            type: str
            choices: [start, stop, promote, demote]
            default: start
          then_action:
            description: Action of I(then).
            type: str
            choices: [start, stop, promote, demote]
            default: start
          kind:
            description: Constraint kind; pcs's default (Mandatory) if unset.
            type: str
            choices: [Optional, Mandatory, Serialize]
          symmetrical:
            description: Whether the reverse order applies to the reverse actions; pcs's
              default (true) if unset.
            type: bool
  force:
    description: Pass C(--force) to every pcs command (e.g. custom cluster properties).
    type: bool
    default: false
  no_default_ops:
    description: Pass C(--no-default-ops) to resource and stonith creation (per-entry override).
    type: bool
    default: false
  created_stopped:
    description:
      - Resources (primitive or clone ids) that cannot run before something the
        playbook makes after this converge (a schema, a service user). When new they are
        created with C(target-role=Stopped); once they exist, the primitive's
        C(target-role) is left as the cluster has it, so the role that makes what they
        need starts them (C(pcs resource enable)) and later runs change nothing.
    type: list
    elements: str
    default: []
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


# ---------------------------------------------------------------- data shape

# The nested schema lives in ARGUMENT_SPEC alone: AnsibleModule checks it on the Ansible
# path and validate() checks direct callers against the same spec.

# Operation names Pacemaker runs; anything else after pcs' `op` would be read as one of
# its keywords (`meta`, `clone`, ...) or an unknown action.
OP_ACTIONS = frozenset({"start", "stop", "monitor", "promote", "demote", "notify", "reload",
                        "reload-agent", "migrate_to", "migrate_from", "validate-all",
                        "meta-data", "status"})


def _clone_option() -> dict[str, Any]:
    return {"type": "dict", "options": {"id": {"type": "str"}, "meta": {"type": "dict"}}}


def _primitive_options() -> dict[str, Any]:
    return {
        "id": {"type": "str", "required": True},
        "agent": {"type": "str", "required": True},
        "options": {"type": "dict"},
        "meta": {"type": "dict"},
        # Free-form: each op is its action plus whatever attributes pcs takes.
        "ops": {"type": "list", "elements": "dict"},
        # None: the module-level flag applies.
        "force": {"type": "bool"},
        "no_default_ops": {"type": "bool"},
    }


def _role() -> dict[str, Any]:
    return {"type": "str", "choices": list(ROLES)}


ARGUMENT_SPEC: dict[str, Any] = {
    "properties": {"type": "dict", "default": {}},
    "resource_defaults": {"type": "dict", "default": {}},
    "op_defaults": {"type": "dict", "default": {}},
    "node_attributes": {"type": "dict", "default": {}},
    "resources": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            **_primitive_options(),
            "clone": _clone_option(),
            "promotable": _clone_option(),
        },
        "mutually_exclusive": [["clone", "promotable"]],
    },
    "groups": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "id": {"type": "str", "required": True},
            "resources": {"type": "list", "elements": "str", "required": True},
            "meta": {"type": "dict"},
            "clone": _clone_option(),
            "promotable": _clone_option(),
        },
        "mutually_exclusive": [["clone", "promotable"]],
    },
    "stonith": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": _primitive_options(),
    },
    "constraints": {
        "type": "dict",
        "default": {},
        "options": {
            "location": {
                "type": "list",
                "elements": "dict",
                "options": {
                    "id": {"type": "str"},
                    "resource": {"type": "str", "required": True},
                    "node": {"type": "str"},
                    "rule": {"type": "str"},
                    "score": {"type": "str", "default": "INFINITY"},
                    "resource_discovery": {
                        "type": "str",
                        "choices": ["always", "never", "exclusive"],
                    },
                    "role": _role(),
                },
                "mutually_exclusive": [["node", "rule"]],
                "required_one_of": [["node", "rule"]],
                "required_by": {"role": ["rule"]},
            },
            "colocation": {
                "type": "list",
                "elements": "dict",
                "options": {
                    "id": {"type": "str"},
                    "resource": {"type": "str", "required": True},
                    "with": {"type": "str", "required": True},
                    "score": {"type": "str", "default": "INFINITY"},
                    "role": _role(),
                    "with_role": _role(),
                },
            },
            "order": {
                "type": "list",
                "elements": "dict",
                "options": {
                    "id": {"type": "str"},
                    "first": {"type": "str", "required": True},
                    "then": {"type": "str", "required": True},
                    "first_action": {"type": "str", "choices": list(ACTIONS), "default": "start"},
                    "then_action": {"type": "str", "choices": list(ACTIONS), "default": "start"},
                    "kind": {"type": "str", "choices": list(KINDS)},
                    "symmetrical": {"type": "bool"},
                },
            },
        },
    },
    "force": {"type": "bool", "default": False},
    "no_default_ops": {"type": "bool", "default": False},
    "created_stopped": {"type": "list", "elements": "str", "default": []},
    "remove_all": {"type": "bool", "default": False},
    "pcs_path": {"type": "str", "default": "pcs"},
    "cib_file": {"type": "path"},
}

# The keys of an option's spec that describe its suboptions and how they combine.
_NESTED = ("options", "mutually_exclusive", "required_together", "required_one_of",
           "required_if", "required_by")
# The key that names a list entry in messages (the entry's id unless told here).
_LABEL_KEYS = {"constraints.location": "resource", "constraints.colocation": "resource",
               "constraints.order": "first"}


def _label(section: str, i: int, entry: Any) -> str:
    key = _LABEL_KEYS.get(section, "id")
    if isinstance(entry, dict) and isinstance(entry.get(key), str):
        return f"{section}[{i}] ({key}={entry[key]})"
    return f"{section}[{i}]"


def _check_shape(
    spec: dict[str, Any], params: Any, path: str, errors: list[str], **checks: Any
) -> dict[str, Any]:
    """params checked against spec one mapping at a time, so that each error names its
    entry (Ansible's own messages do not say which list entry is wrong); returns the
    normalised copy."""
    where = path or "options"
    try:
        params = check_type_dict(params)
    except TypeError:
        errors.append(f"{where}: must be a mapping")
        return {}
    # Lists of mappings with suboptions are walked below; only their type is checked here.
    shallow = {
        name: {k: val for k, val in s.items()
               if k not in _NESTED and not (k == "elements" and "options" in s)}
        for name, s in spec.items()
    }
    # Null means unset: mutually_exclusive and required_one_of count keys, and the params
    # AnsibleModule hands on hold every key, null when not given.
    given = {k: val for k, val in params.items() if val is not None}
    result = ArgumentSpecValidator(shallow, **checks).validate(given)
    if result.unsupported_parameters:
        errors.append(f"{where}: unknown key(s) {', '.join(sorted(result.unsupported_parameters))}"
                      f"; allowed: {', '.join(sorted(spec))}")
    errors.extend(f"{where}: {e.msg}" for e in result.errors.errors
                  if not isinstance(e, UnsupportedError))
    out = result.validated_parameters
    for name, s in spec.items():
        if "options" not in s or not out.get(name):
            continue
        sub = {k: s[k] for k in _NESTED[1:] if k in s}
        child = f"{path}.{name}" if path else name
        if s["type"] == "dict":
            out[name] = _check_shape(s["options"], out[name], child, errors, **sub)
        elif isinstance(out[name], list):
            out[name] = [
                _check_shape(s["options"], entry, _label(child, i, entry), errors, **sub)
                for i, entry in enumerate(out[name])
            ]
    return out


# ---------------------------------------------------------------- cross-checks


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool))


def _to_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class _Checker:
    """What the argument spec cannot say: values of free-form mappings, non-empty
    names, op actions, unique ids, and what each entry names elsewhere."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.ids: dict[str, str] = {}  # id -> where it was declared

    def err(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    def names(self, entry: dict, where: str, *keys: str) -> None:
        for key in keys:
            if entry.get(key) is not None and not entry[key].strip():
                self.err(where, f"'{key}' must not be empty")

    def kv(self, value: Any, where: str) -> dict[str, str]:
        """A free-form mapping of name to a scalar, values as the CIB writes them."""
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

    def claim(self, obj_id: str | None, where: str) -> None:
        if not obj_id:
            return
        if obj_id in self.ids:
            self.err(where, f"id '{obj_id}' already used by {self.ids[obj_id]}")
        else:
            self.ids[obj_id] = where

    def clone(self, entry: dict, where: str, owner: str) -> dict | None:
        kind = next((k for k in ("clone", "promotable") if entry.get(k) is not None), None)
        if kind is None:
            return None
        spec = entry[kind]
        self.names(spec, f"{where}.{kind}", "id")
        return {
            "kind": kind,
            "id": spec.get("id") or f"{owner}-clone",
            "explicit_id": spec.get("id"),
            "meta": self.kv(spec.get("meta"), f"{where}.{kind}.meta"),
        }

    def primitive(self, entry: dict, where: str, force: bool, no_default_ops: bool) -> dict:
        self.names(entry, where, "id", "agent")
        ops = []
        for j, op in enumerate(entry.get("ops") or []):
            owhere = f"{where}.ops[{j}]"
            action = op.get("action")
            attrs = self.kv({k: x for k, x in op.items() if k != "action"}, owhere)
            if action is None:
                self.err(owhere, "missing 'action'")
            elif not isinstance(action, str) or action not in OP_ACTIONS:
                self.err(owhere, f"unknown action {action!r}; one of "
                         f"{', '.join(sorted(OP_ACTIONS))}")
            else:
                ops.append((action, attrs))
        self.claim(entry["id"], where)
        return {
            "id": entry["id"],
            "agent": entry["agent"],
            "options": self.kv(entry.get("options"), f"{where}.options"),
            "meta": self.kv(entry.get("meta"), f"{where}.meta"),
            "ops": ops,
            "force": force if entry.get("force") is None else entry["force"],
            "no_default_ops": (
                no_default_ops if entry.get("no_default_ops") is None else entry["no_default_ops"]
            ),
            "clone": self.clone(entry, where, entry["id"]),
        }


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise module parameters; raise CibError naming every bad entry."""
    shape_errors: list[str] = []
    p = _check_shape(ARGUMENT_SPEC, params, "", shape_errors)
    # The cross-checks read well-formed data only.
    if shape_errors:
        raise CibError("invalid pcs_cib data:\n  " + "\n  ".join(shape_errors))

    c = _Checker()
    spec: dict[str, Any] = {
        key: p[key] for key in ("force", "remove_all", "pcs_path", "cib_file")
    }
    for key in ("properties", "resource_defaults", "op_defaults"):
        spec[key] = c.kv(p[key], key)
    spec["node_attributes"] = {}
    for node, attrs in p["node_attributes"].items():
        spec["node_attributes"][str(node)] = c.kv(attrs, f"node_attributes[{node}]")

    cloned: dict[str, str] = {}  # primitive or group id -> its clone id
    spec["resources"] = []
    for i, entry in enumerate(p["resources"]):
        where = _label("resources", i, entry)
        r = c.primitive(entry, where, p["force"], p["no_default_ops"])
        if r["clone"]:
            c.claim(r["clone"]["id"], where)
            cloned[r["id"]] = r["clone"]["id"]
        spec["resources"].append(r)
    spec["stonith"] = [
        c.primitive(entry, _label("stonith", i, entry), p["force"], p["no_default_ops"])
        for i, entry in enumerate(p["stonith"])
    ]
    primitives = {r["id"] for r in spec["resources"]}

    spec["groups"] = []
    grouped: dict[str, str] = {}  # member -> its group
    for i, entry in enumerate(p["groups"]):
        where = _label("groups", i, entry)
        gid = entry["id"]
        c.names(entry, where, "id")
        members = entry["resources"]
        if not members:
            c.err(where, "'resources' must list at least one resource")
        for m in members:
            if m not in primitives:
                c.err(where, f"member {m!r} is not a declared resource")
            elif m in cloned:
                c.err(where, f"member {m!r} is cloned; clone the group instead")
            elif m in grouped:
                c.err(where, f"member {m!r} is already in group '{grouped[m]}'")
            else:
                grouped[m] = gid
        clone = c.clone(entry, where, gid)
        c.claim(gid, where)
        if clone:
            c.claim(clone["id"], where)
            cloned[gid] = clone["id"]
        spec["groups"].append(
            {"id": gid, "resources": members, "meta": c.kv(entry.get("meta"), f"{where}.meta"),
             "clone": clone}
        )

    by_clone = {clone: prim for prim, clone in cloned.items()}
    spec["created_stopped"] = []
    for i, rid in enumerate(p["created_stopped"]):
        prim = by_clone.get(rid, rid)
        if prim not in primitives:
            c.err(f"created_stopped[{i}]", f"{rid!r} is not a declared resource or its clone")
        else:
            spec["created_stopped"].append(prim)

    known = set(c.ids)  # anything a constraint may name
    spec["constraints"] = {"location": [], "colocation": [], "order": []}
    for kind, refs in (("location", ("resource",)), ("colocation", ("resource", "with")),
                       ("order", ("first", "then"))):
        for i, entry in enumerate(p["constraints"].get(kind) or []):
            where = _label(f"constraints.{kind}", i, entry)
            con = dict(entry)
            c.names(entry, where, "id", "node", "rule")
            cid = entry.get("id")
            if cid and cid.startswith(CLI_PREFIX):
                c.err(where, f"ids starting with '{CLI_PREFIX}' are reserved for pcs move/ban")
            c.claim(cid, where)
            for key in refs:
                r = entry[key]
                if r not in known:
                    c.err(where, f"'{key}' names undeclared resource '{r}'")
                elif r in cloned and not p["force"]:
                    c.err(where, f"'{key}' names '{r}' which is cloned; use '{cloned[r]}'")
            if kind == "location" and entry.get("rule") is not None:
                try:
                    con["rule_args"] = shlex.split(entry["rule"])
                except ValueError as e:
                    c.err(where, f"cannot parse rule: {e}")
            spec["constraints"][kind].append(con)

    if c.errors:
        raise CibError("invalid pcs_cib data:\n  " + "\n  ".join(c.errors))
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


def _primitives(spec: dict[str, Any], root: ET.Element):
    """(declared entry, its primitive in `root` or None) for each created_stopped one."""
    for r in spec["resources"]:
        if r["id"] in spec["created_stopped"]:
            yield r, root.find(f"configuration/resources//primitive[@id='{r['id']}']")


def _hold_target_role(spec: dict[str, Any], live: ET.Element) -> None:
    """created_stopped: Stopped when new, else the live target-role (or none) kept."""
    for r, el in _primitives(spec, live):
        meta = {k: v for k, v in r["meta"].items() if k != "target-role"}
        held = None if el is None else el.find("meta_attributes/nvpair[@name='target-role']")
        if el is None:
            meta["target-role"] = "Stopped"
        elif held is not None:
            meta["target-role"] = held.get("value")
        r["meta"] = meta


def _keep_empty_meta(spec: dict[str, Any], live: ET.Element, desired: ET.Element) -> None:
    """`pcs resource enable` leaves an empty meta_attributes behind; one the desired CIB
    lacks would count as a change on every later run."""
    pairs = zip(_primitives(spec, live), _primitives(spec, desired), strict=True)
    for (_, was), (_, want) in pairs:
        have = None if was is None else was.find("meta_attributes")
        if have is None or len(have) or want is None or want.find("meta_attributes") is not None:
            continue
        ops = want.find("operations")
        want.insert(len(want) if ops is None else list(want).index(ops),
                    ET.Element("meta_attributes", id=have.get("id")))


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
        _hold_target_role(spec, live)
        _write(live, c.live)
        desired = copy.deepcopy(live)
        kept = c.own_sections(desired)
        _write(desired, c.desired)
        c.build(desired)
        desired = c.finish(kept)
        if spec["created_stopped"]:
            _keep_empty_meta(spec, live, desired)
            _write(desired, c.desired)
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


class _Module(AnsibleModule):
    def _load_params(self) -> None:
        super()._load_params()
        # Fence passwords sit in free-form mappings no_log cannot mark: masked before the
        # argument spec checks run, whose failure returns the arguments.
        self.no_log_values.update(secret_values(self.params))


def main() -> None:
    # no_log: the arguments may hold fence passwords; keep them out of the journal.
    module = _Module(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, no_log=True)
    try:
        result = run(module.params, check_mode=module.check_mode, want_diff=module._diff)
    except CibError as e:
        module.fail_json(msg=str(e))
    for w in result.pop("warnings"):
        module.warn(w)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
