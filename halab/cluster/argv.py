"""Watch the host's process arguments while a command runs (`make lab`, `make test`) and
report any generated secret found in them. The nodes share the host's PID view, so this
sees every node's processes too: `ps` on the host would have shown what is found here.

Command lines are kept in memory only; the report names the secret and the program,
with every secret value scrubbed. Sampling every 0.1 s misses processes that live
shorter than that: the commands that took a password in argv (pcs, rabbitmqctl) run
for seconds."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from halab.cluster import declared
from halab.lab import topology

INTERVAL = 0.1  # seconds between samples
WRITE_EVERY = 5.0  # seconds between report updates: tests read it while the run goes on


def command_lines() -> set[str]:
    """Every process's arguments, space-joined (kernel threads have none)."""
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        if raw:
            found.add(raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace"))
    return found


def leaks(lines: set[str], hidden: dict[str, str]) -> list[dict]:
    """One entry per (secret, command line) found, the line scrubbed."""
    out = []
    for line in sorted(lines):
        for value, name in hidden.items():
            if value in line:
                out.append({"secret": name, "command": declared.scrub(line, hidden)[:300]})
    return out


def _write(path: Path, report: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(path)


def watch(command: list[str], out: str | Path, secrets_dir: str | Path | None = None) -> int:
    """Run `command`, sampling arguments until it exits; its exit code."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    secrets_dir = secrets_dir or topology.secrets_dir()
    seen: set[str] = set()
    checked: set[str] = set()
    found: list[dict] = []
    samples, started, written = 0, time.time(), 0.0
    proc = subprocess.Popen(command)
    try:
        while True:
            done = proc.poll() is not None
            seen |= command_lines()
            samples += 1
            if done or time.monotonic() - written >= WRITE_EVERY:
                # Secrets appear during the run: each write reads them anew and checks
                # the lines seen since the last one (all of them once more at the end).
                hidden = declared.secret_values(secrets_dir)
                fresh = seen if done else seen - checked
                found = leaks(fresh, hidden) if done else found + leaks(fresh, hidden)
                checked |= fresh
                _write(out, {"command": command[:3], "started": started,
                             "updated": time.time(), "finished": done, "samples": samples,
                             "command_lines": len(seen), "leaks": found})
                written = time.monotonic()
            if done:
                return proc.returncode
            time.sleep(INTERVAL)
    except KeyboardInterrupt:
        proc.wait()
        raise
