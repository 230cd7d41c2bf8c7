"""What one failover scenario run measured: filled in by the catalogue while the run
goes on, asserted on by the testinfra catalogue, aggregated by the report. Written as
one JSON line per run (a campaign's failover-<time>.jsonl, the test's catalogue.jsonl);
`load` reads such a file back, so a report can be rebuilt from it (`halab failover
--report-from`).

Seconds are from the fault's injection (`t0`); None means not measured in this run
(the scenario has no such step, or the run ended before it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path


@dataclass
class Result:
    scenario: str = ""
    faults: str = ""  # the fault backend: lab | remote
    victim: str = ""  # the node the fault hit; "" when it hit the whole cluster
    t0: float = 0.0  # epoch seconds of the injection; 0.0 when the run ended before it
    totem: str | None = None  # a campaign's corosync setting: default | token-<ms>
    run: int | None = None  # a campaign's run number within its scenario and totem
    violations: list[str] = field(default_factory=list)

    # The cluster before the fault (losing the DC adds an election to the recovery).
    dc_before: str | None = None
    public_owner_before: str | None = None
    # Failed actions cleared before the run (the gate) and those the fault left behind.
    failed_actions_before: list = field(default_factory=list)
    failed_actions: list = field(default_factory=list)
    failcount_before: int | None = None  # kill: the primitive's fail count on the victim
    failcount_after: int | None = None

    # Timings, as the catalogue observed them.
    # from the fault command's start to when the fault took effect (a fence agent's
    # start-up, an ssh session): the other figures count from the latter
    inject_s: float | None = None
    detected_s: float | None = None  # the cluster sees the node gone (or the kill, or no quorum)
    fenced_s: float | None = None  # fencing of the cut-off node done (partition)
    vips_moved_s: float | None = None  # every VIP and the Redis master away from the victim
    redis_promoted_s: float | None = None  # a Redis master on another node
    resource_back_s: float | None = None  # a killed clone instance running again
    services_back_s: float | None = None  # every service answering through its VIP
    survivor_stopped_s: float | None = None  # quorum: the survivor stopped every resource
    stopped_s: float | None = None  # full restart: every VIP down
    steps_s: list[float] | None = None  # rolling restart: each node's restart done
    handed_over: list[str] | None = None  # rolling restart: roles banned before a stop
    healthy_again_s: float | None = None  # from the restore to the declared steady state
    split_brain_vip_s: float | None = None  # longest time a VIP was up on two nodes
    galera_write_gap_s: float | None = None  # the bank workload's longest write gap
    keystone_gap_s: float | None = None  # the token workload's longest gap
    boot_gap_s: float | None = None  # longest time with no server reaching ACTIVE
    image_gap_s: float | None = None  # longest time with no image read back intact
    restore_t: float | None = None  # epoch seconds the restore began

    # What the fault touched, when it is not just the victim.
    lost: list[str] | None = None  # quorum: the nodes powered off
    start_all_error: str | None = None  # full restart: `pcs cluster start --all` refused

    # Per name: each workload's verify() figures, each service's recovery (see
    # catalogue._service), the probe's samples, the keepalived peer's figures.
    data: dict = field(default_factory=dict)
    services: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)
    peer: dict | None = None
    # The cluster's own records (halab.failover.timeline): phases in seconds from the
    # fault, transition aborts during the recovery, and the events themselves.
    timeline: dict = field(default_factory=dict)
    aborts: list | None = None
    events: list = field(default_factory=list)
    bundle: str | None = None  # a failed run's support bundle (or why none was written)

    def as_dict(self, samples: bool = True) -> dict:
        """The JSON record; what was not measured (None) is left out. Without `samples`,
        the probe's samples are too (they dwarf the rest)."""
        return {k: v for k, v in vars(self).items()
                if v is not None and (samples or k != "samples")}

    def to_json(self, samples: bool = True) -> str:
        return json.dumps(self.as_dict(samples))

    @classmethod
    def from_dict(cls, record: dict) -> Result:
        """A result from its JSON record: keys it does not know are ignored, missing
        ones (and nulls) keep their defaults, so older and newer records still read."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known and v is not None})


def load(path: str | Path) -> list[Result]:
    """The results of a JSON lines file, one run a line."""
    lines = Path(path).read_text().splitlines()
    return [Result.from_dict(json.loads(line)) for line in lines if line.strip()]
