"""A bundle of what a person needs to understand a failed run, taken before anything is
restored: from every reachable node the cluster's view (crm_mon, pcs status), its
fencing history and the journal since the run began; from the host the fence switch's
log, the tail of each node's console and whatever timeline the caller has. `halab
collect` makes the same bundle by hand; the test suite makes one for every failed lab
test and the failover catalogue for every run with a violation. Every generated
secret's value is replaced by its name before anything is written (the CIB holds
fence passwords, journals may quote a command line)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from halab.cluster import declared
from halab.errors import HalabError
from halab.lab import fenced, nodes, topology

JOURNAL_LINES = 20000
SERVICE_LOGS = ("/var/log/keystone/keystone.log", "/var/log/mysql/error.log",
                "/var/log/rabbitmq/rabbit@*.log", "/var/log/redis/redis-server.log",
                "/var/log/pcsd/pcsd.log", "/var/log/nova/*.log", "/var/log/placement/*.log",
                "/var/log/glance/*.log", "/var/log/neutron/*.log")
SERVICE_LOG_LINES = 3000
# (file, command) per node; {since} is epoch seconds.
NODE_COMMANDS = (
    ("crm_mon.txt", "crm_mon --one-shot --inactive --failcounts --show-node-attributes "
                    "--fence-history=2"),
    ("pcs_status.txt", "pcs status --full"),
    ("cib.xml", "cibadmin --query"),
    ("journal.txt", "journalctl --no-pager -o short-iso-precise --since=@{since} "
                    f"| tail -n {JOURNAL_LINES}"),
    # What the journal lacks: these services write their own files (uwsgi's request
    # log, the broker's boot steps, Galera's state transfers, what pcsd answered, each
    # Nova request by its id).
    ("service-logs.txt", "for f in " + " ".join(SERVICE_LOGS) + "; do "
                         "[ -f \"$f\" ] && echo \"== $f\" && "
                         f"tail -n {SERVICE_LOG_LINES} \"$f\"; done; true"),
)
CRM_REPORT_TIMEOUT = 120


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "run"


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
    except OSError as exc:
        return f"(unreadable: {exc})\n"


def bundle(name: str, since: float, out_dir: str | Path = "reports/bundles",
           extra: dict[str, object] | None = None, crm_report: bool = False) -> Path:
    """Write the bundle to <out_dir>/<name>-<time>/ and return its path. `since` bounds
    the journals (epoch seconds); `extra` maps file names to text or JSON-able data
    (a test's timeline, a run's result). Never raises for an unreachable node: what
    could not be read is said in the bundle's index."""
    path = Path(out_dir) / f"{_slug(name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    path.mkdir(parents=True, exist_ok=True)
    hidden = declared.secret_values(topology.secrets_dir())

    def write(target: Path, text: str) -> None:
        target.write_text(declared.scrub(text, hidden))

    index = [f"bundle for {name}, records since {time.strftime('%F %T', time.gmtime(since))} "
             "UTC", ""]
    for node in topology.NODES:
        where = path / node.name
        if not nodes.is_running(node):
            index.append(f"{node.name}: not running")
            continue
        where.mkdir(exist_ok=True)
        for fname, command in NODE_COMMANDS:
            try:
                proc = nodes.ssh(node, [command.format(since=int(since))], timeout=60,
                                 check=False)
                write(where / fname, proc.stdout + (proc.stderr or ""))
                index.append(f"{node.name}/{fname}: exit {proc.returncode}")
            except HalabError as exc:
                index.append(f"{node.name}/{fname}: not read ({exc})")
        write(where / "console.log", _tail(nodes.NodeDir(node).console, 300))
    if crm_report:
        index.append(_crm_report(path, since))
    write(path / "fenced.log", _tail(fenced.log_path(), 2000))
    index.append("fenced.log: the fence switch's last 2000 lines")
    for fname, data in (extra or {}).items():
        text = data if isinstance(data, str) else json.dumps(data, indent=1, default=str)
        write(path / fname, text)
        index.append(f"{fname}: from the caller")
    (path / "INDEX.txt").write_text("\n".join(index) + "\n")
    with (Path(out_dir) / "bundles.txt").open("a") as fh:  # what CI prints last
        fh.write(f"{name}: {path}\n")
    return path


def _crm_report(path: Path, since: float) -> str:
    """crm_report --single-node of the first running node, fetched as its archive."""
    import subprocess

    node = next((n for n in topology.NODES if nodes.is_running(n)), None)
    if node is None:
        return "crm_report: no node running"
    dest = f"/tmp/halab-crm-report-{int(time.time())}"
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(since - 60))
    cmd = [*nodes.ssh_command(node),
           f"crm_report --single-node --from '{start}' --dest {dest} >/dev/null 2>&1; "
           f"cat {dest}.tar.bz2; rm -rf {dest} {dest}.tar.bz2"]
    try:  # binary output: not through halab.run, which decodes text
        proc = subprocess.run(cmd, capture_output=True, timeout=CRM_REPORT_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return f"crm_report on {node.name}: timed out after {CRM_REPORT_TIMEOUT}s"
    if not proc.stdout:
        return f"crm_report on {node.name}: produced nothing (exit {proc.returncode})"
    (path / f"crm_report-{node.name}.tar.bz2").write_bytes(proc.stdout)
    return f"crm_report-{node.name}.tar.bz2: crm_report --single-node on {node.name}"
