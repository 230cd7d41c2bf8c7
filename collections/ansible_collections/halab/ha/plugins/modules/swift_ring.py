#!/usr/bin/python
"""Converge one Swift ring (builder and ring file) to a declared list of devices."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: swift_ring
short_description: Converge a Swift ring to a declared list of devices
description:
  - Loads C(<dir>/<name>.builder), or creates it, adds the declared devices that are
    missing, removes the ones no longer declared, updates region, zone and weight, and
    rebalances only when a device changed. Writes C(<dir>/<name>.ring.gz) when it is
    missing or differs from the builder's ring (Swift writes rings byte for byte the
    same for the same data, so identical rings mean identical files).
  - Devices are matched on (ip, port, device). Part power and replica count are fixed
    at creation; changing them is a migration this module refuses.
  - Runs where Swift's Python library is installed (a storage or proxy node).
    Supports check mode.
options:
  name:
    description: The ring.
    type: str
    required: true
    choices: [account, container, object]
  dir:
    description: Where the builder and the ring file live.
    type: path
    default: /etc/swift
  part_power:
    description: 2^part_power partitions.
    type: int
    required: true
  replicas:
    description: Copies of each partition.
    type: int
    required: true
  min_part_hours:
    description: Hours before a partition may move again after a rebalance.
    type: int
    default: 1
  devices:
    description: The ring's devices.
    type: list
    elements: dict
    required: true
    suboptions:
      ip: {description: Address the server listens on., type: str, required: true}
      port: {description: The server's port., type: int, required: true}
      device: {description: Directory under the devices path., type: str, required: true}
      region: {description: Region., type: int, default: 1}
      zone: {description: Zone (one per node here)., type: int, required: true}
      weight: {description: Relative share of partitions., type: float, default: 100}
"""

RETURN = r"""
devices:
  description: The ring's devices after the run, as (ip, port, device, zone, weight).
  returned: always
  type: list
balance:
  description: The builder's balance after the run (0 is perfect).
  returned: always
  type: float
"""

_TUNABLE = ("region", "zone", "weight")


def _key(dev: dict) -> tuple:
    return (dev["ip"], int(dev["port"]), dev["device"])


def converge(params: dict, check_mode: bool) -> dict[str, Any]:
    from swift.common.ring import RingBuilder  # the node's python3-swift

    builder_path = os.path.join(params["dir"], f"{params['name']}.builder")
    ring_path = os.path.join(params["dir"], f"{params['name']}.ring.gz")
    changes: list[str] = []
    if os.path.exists(builder_path):
        builder = RingBuilder.load(builder_path)
        fixed = {"part_power": builder.part_power, "replicas": builder.replicas}
        wanted = {k: params[k] for k in fixed}
        if fixed != wanted:
            raise ValueError(f"{builder_path} has {fixed}, not {wanted}: changing them is a "
                             "migration (swift-ring-builder prepare_increase_partition_power)")
    else:
        builder = RingBuilder(params["part_power"], params["replicas"],
                              params["min_part_hours"])
        changes.append("created")

    # A rebalance drops removed devices (their slots become None).
    present = {_key(d): d for d in builder.devs if d is not None}
    declared = {_key(d): d for d in params["devices"]}
    for key, dev in declared.items():
        have = present.get(key)
        if have is None:
            # Replication on the same address: RingBuilder.load fills these in, and a
            # ring written before and after a load must be the same bytes.
            builder.add_dev({"region": dev["region"], "zone": dev["zone"], "ip": key[0],
                             "port": key[1], "replication_ip": key[0],
                             "replication_port": key[1], "device": key[2],
                             "weight": dev["weight"]})
            changes.append(f"added {key}")
            continue
        for attr in _TUNABLE:
            if float(have[attr]) != float(dev[attr]):
                getattr(builder, f"set_dev_{attr}")(have["id"], dev[attr])
                changes.append(f"{attr} of {key}")
    for key, have in present.items():
        if key not in declared:
            builder.remove_dev(have["id"])
            changes.append(f"removed {key}")

    builder_changed = bool(changes)
    if builder.devs_changed:
        builder.rebalance()
    with tempfile.TemporaryDirectory(dir=params["dir"]) as tmp:
        fresh = os.path.join(tmp, os.path.basename(ring_path))
        builder.get_ring().save(fresh)
        with open(fresh, "rb") as fh:
            ring_bytes = fh.read()
        old = None
        if os.path.exists(ring_path):
            with open(ring_path, "rb") as fh:
                old = fh.read()
        if old != ring_bytes:
            changes.append("ring file")
            if not check_mode:
                os.chmod(fresh, 0o644)
                os.replace(fresh, ring_path)
    if builder_changed and not check_mode:
        builder.save(builder_path)
    devs = sorted((d["ip"], d["port"], d["device"], d["zone"], d["weight"])
                  for d in builder.devs if d is not None and d["weight"] > 0)
    return {"changed": bool(changes), "changes": changes, "devices": devs,
            "balance": float(builder.get_balance())}


def main() -> None:
    device = {"ip": {"type": "str", "required": True},
              "port": {"type": "int", "required": True},
              "device": {"type": "str", "required": True},
              "region": {"type": "int", "default": 1},
              "zone": {"type": "int", "required": True},
              "weight": {"type": "float", "default": 100}}
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True,
                     "choices": ["account", "container", "object"]},
            "dir": {"type": "path", "default": "/etc/swift"},
            "part_power": {"type": "int", "required": True},
            "replicas": {"type": "int", "required": True},
            "min_part_hours": {"type": "int", "default": 1},
            "devices": {"type": "list", "elements": "dict", "required": True,
                        "options": device},
        },
        supports_check_mode=True,
    )
    try:
        from swift.common.exceptions import RingBuilderError
    except ImportError as exc:
        module.fail_json(msg=f"Swift's Python library is not installed here: {exc}")
    try:
        module.exit_json(**converge(module.params, module.check_mode))
    except (RingBuilderError, ValueError, OSError) as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
