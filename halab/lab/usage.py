"""What the lab's nodes cost the host: memory as PSS (each shared page counted once,
split among its users) and CPU over a window, per node, from each node's cgroup tree
(halab.lab.cgroup): cgroup2's cpu.stat counts every process that ran in it, the
agents' short-lived commands included. The host's busy share over the same window
(/proc/stat) is given beside it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from halab.errors import HalabError
from halab.lab import cgroup, topology


def _tree(node: topology.Node) -> Path:
    """The node's cgroup2 directory (the one with cpu.stat)."""
    for path in cgroup.paths(node):
        if (path / "cpu.stat").exists():
            return path
    raise HalabError(f"{node.name}: no cgroup2 tree with cpu.stat (is it running?)")


def usage_usec(node: topology.Node) -> int:
    for line in (_tree(node) / "cpu.stat").read_text().splitlines():
        key, value = line.split()
        if key == "usage_usec":
            return int(value)
    raise HalabError(f"{node.name}: cpu.stat has no usage_usec")


def pids(node: topology.Node) -> list[int]:
    found: list[int] = []
    for top, _, files in os.walk(_tree(node)):
        if "cgroup.procs" in files:
            found.extend(int(p) for p in Path(top, "cgroup.procs").read_text().split())
    return found


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:  # gone meanwhile, or a kernel thread
        pass
    return 0


def host_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all host CPUs."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def measure(seconds: float = 60.0) -> dict:
    """Per node: PSS (MiB) at the end, CPU as a share of all the host's CPUs over the
    window; their sums; the host's own busy share."""
    cpus = os.cpu_count() or 1
    before = {n.name: usage_usec(n) for n in topology.NODES}
    host0, t0 = host_busy(), time.monotonic()
    time.sleep(seconds)
    host1, elapsed = host_busy(), time.monotonic() - t0
    out: dict = {"seconds": round(elapsed, 1), "host_cpus": cpus, "nodes": {}}
    for n in topology.NODES:
        used = (usage_usec(n) - before[n.name]) / 1e6
        now = pids(n)
        out["nodes"][n.name] = {
            "processes": len(now),
            "pss_mib": round(sum(pss_kib(p) for p in now) / 1024),
            "cpu_pct_of_host": round(100 * used / elapsed / cpus, 1),
        }
    out["pss_mib"] = sum(v["pss_mib"] for v in out["nodes"].values())
    out["cpu_pct_of_host"] = round(sum(v["cpu_pct_of_host"] for v in out["nodes"].values()), 1)
    busy, total = (b - a for a, b in zip(host0, host1, strict=True))
    out["host_busy_pct"] = round(100 * busy / total, 1) if total else None
    return out
