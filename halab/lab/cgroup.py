"""Each node's own cgroup.

systemd-nspawn with --keep-unit puts the container in a "payload" cgroup below its own
(and itself in "supervisor"). Three nodes started by one host process would share that
cgroup: their three systemds would create, empty and remove the same
system.slice/<unit> cgroups (seen: 219/CGROUP when a unit restarted on every node at
once, "Failed to kill control group" on stops). So nspawn is started in
halab/<node> of every hierarchy systemd tracks processes in, and that tree goes when
the node does."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from halab.errors import HalabError
from halab.lab import poll, topology

PARENT = "halab"
# sh -c MOVE name cgroup.procs... -- command: the shell joins each cgroup, then execs.
MOVE = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


def hierarchies(mountinfo: str | None = None) -> list[Path]:
    """Mount points of the hierarchies systemd uses: cgroup2 (the unified one, or
    hybrid's /sys/fs/cgroup/unified) and the named v1 "systemd" one (legacy, hybrid)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        post = fields[fields.index("-") + 1:]
        fstype, options = post[0], post[2] if len(post) > 2 else ""
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options.split(",")):
            found.append(Path(fields[4]))
    return found


def paths(node: topology.Node) -> list[Path]:
    return [root / PARENT / node.name for root in hierarchies()]


def wrap(node: topology.Node, command: list[str]) -> list[str]:
    """`command`, run by a shell that first moves itself into the node's cgroups
    (created here): no preexec_fn, as the fence switch boots nodes from threads."""
    remove(node)  # what a killed node left
    procs = []
    for path in paths(node):
        path.mkdir(parents=True)
        procs.append(str(path / "cgroup.procs"))
    return ["sh", "-c", MOVE, "halab-cgroup", *procs, "--", *command]


def remove(node: topology.Node, timeout: float = 10) -> None:
    """Remove the node's cgroup trees, deepest first, once their processes are gone
    (a killed node's last processes leave them a moment after its init)."""
    for path in paths(node):
        if not path.exists():
            continue

        def emptied(path: Path = path) -> bool:
            for top, dirs, _ in os.walk(path, topdown=False):
                for d in dirs:
                    try:
                        os.rmdir(os.path.join(top, d))
                    except FileNotFoundError:
                        pass
                    except OSError:  # EBUSY: processes still in it
                        return False
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                return False
            return True

        if not poll.until(emptied, timeout, interval=0.2):
            left = (path / "cgroup.procs").read_text().split() if path.exists() else []
            raise HalabError(f"{node.name}: its cgroup {path} is still in use "
                             f"(processes {' '.join(left) or 'below it'})")
        with contextlib.suppress(OSError):  # halab/, once the last node's tree is gone
            path.parent.rmdir()
