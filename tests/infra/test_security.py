"""What the lab leaves open on the host: its state (secrets, the nodes' trees whose
configs hold passwords) is root's alone."""

from __future__ import annotations

import stat

from halab import topology


def test_the_labs_state_is_root_only():
    top = topology.state_dir()
    dirs = [top, top / "secrets", top / "nodes",
            *(top / "nodes" / n.name for n in topology.NODES)]
    loose = {str(d): oct(d.stat().st_mode & 0o777) for d in dirs
             if d.stat().st_uid != 0 or d.stat().st_mode & 0o077}
    assert not loose, f"reachable by other host users: {loose}"
    secrets = [p for p in (top / "secrets").rglob("*") if p.is_file()]
    assert secrets
    readable = {str(p): oct(p.stat().st_mode & 0o777) for p in secrets
                if p.stat().st_mode & 0o077 or not stat.S_ISREG(p.stat().st_mode)}
    assert not readable, f"secrets readable beyond root: {readable}"
