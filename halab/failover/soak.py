"""The other side of a short corosync token: false positives. The cluster is left idle,
then the host's CPUs are kept busy by a bounded hog, and every token loss, membership
change and late token (corosync's token_warning) in that time is counted from the
nodes' journals. A token is fit for the lab when both windows show no loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from halab.failover import timeline

# A busy loop that ends by itself, so a crashed harness leaves nothing spinning.
_HOG = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"
COUNTED = ("token_lost", "membership", "token_late")


def hog(seconds: float, cpus: int | None = None) -> list[subprocess.Popen]:
    """One busy process per CPU for `seconds`."""
    return [subprocess.Popen([sys.executable, "-c", _HOG.format(s=float(seconds))])
            for _ in range(cpus or os.cpu_count() or 1)]


def window(lab, label: str, seconds: float, busy: bool, log=print) -> dict:
    """Watch the idle (or hogged) cluster for `seconds`; its counted corosync events."""
    procs = hog(seconds) if busy else []
    start = time.time()
    loads = []
    try:
        while (left := start + seconds - time.time()) > 0:
            time.sleep(min(60.0, left))
            loads.append(os.getloadavg()[0])
            log(f"  ... {time.time() - start:.0f}s of {seconds:.0f}s {label} "
                f"(load {loads[-1]:.1f})")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    end = time.time()
    # a 30-minute window's journal is long: more time than a run's
    events = timeline.collect(lambda n, c: lab.output(n, c, timeout=60), lab.names, "",
                              start, end)
    counted = [e for e in events if e.kind in COUNTED]
    return {"window": label, "seconds": round(end - start), "busy_cpus": len(procs),
            "load_max": round(max(loads, default=0.0), 2),
            **{k: sum(e.kind == k for e in counted) for k in COUNTED},
            "events": timeline.as_json(counted, start)}


def soak(lab, token: int | None, idle_s: float, busy_s: float, out_dir,
         log=print) -> Path:
    """Both windows under `token` (None: corosync's default); the JSON's path."""
    from halab.failover.catalogue import declared_token, set_totem

    label = "default" if token is None else f"token-{token}"
    set_totem(lab, token)
    try:
        lab.wait_healthy()
        results = [window(lab, "idle", idle_s, busy=False, log=log),
                   window(lab, "cpu-hog", busy_s, busy=True, log=log)]
    finally:
        set_totem(lab, declared_token(lab))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"soak-{label}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"totem": label, "windows": results}, indent=1) + "\n")
    for w in results:
        log(f"{label} {w['window']} {w['seconds']}s (max load {w['load_max']}): "
            + ", ".join(f"{k} {w[k]}" for k in COUNTED))
    return path
