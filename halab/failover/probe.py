"""Availability probe: each named check sampled every ~100 ms in its own thread, from
which outage windows and recovery times follow. A check is a callable answering True
or False within a short timeout; builders below make the usual ones (a write where
the service takes writes, so "up" means usable, not merely listening)."""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from http.client import HTTPException
from urllib import error, request

import pymysql
import redis

from halab.cluster import keystone
from halab.cluster.declared import Declared

Check = Callable[[], bool]
Sample = tuple[float, bool]
TIMEOUT = 0.4
MAX_DURATION = 900.0


# ---------------------------------------------------------------- checks


def tcp(host: str, port: int, timeout: float = TIMEOUT) -> Check:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False
    return check


def http(url: str, status: int = 200, auth: tuple[str, str] | None = None,
         timeout: float = TIMEOUT, cacert: str | None = None) -> Check:
    headers = {}
    if auth:  # sent up front: no extra 401 round trip per sample
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()

    def check() -> bool:
        try:
            with request.urlopen(request.Request(url, headers=headers), timeout=timeout,
                                 context=keystone.tls(cacert)) as r:
                return r.status == status
        except error.HTTPError as exc:
            return exc.code == status
        except (OSError, HTTPException):
            return False
    return check


def mysql(host: str, port: int, user: str, password: str, database: str | None = None,
          table: str | None = None, timeout: float = TIMEOUT) -> Check:
    """SELECT 1; with `table` (in `database`) a REPLACE into it instead, proving writes.
    One connection is kept, as clients keep theirs, and dropped on any error."""
    state: dict = {"conn": None, "created": False}

    def check() -> bool:
        try:
            if state["conn"] is None:
                state["conn"] = pymysql.connect(
                    host=host, port=port, user=user, password=password, database=database,
                    connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout,
                    autocommit=True)
            with state["conn"].cursor() as cur:
                if table is None:
                    cur.execute("SELECT 1")
                    return cur.fetchone() == (1,)
                if not state["created"]:
                    cur.execute(f"CREATE TABLE IF NOT EXISTS {table} "
                                "(name VARCHAR(64) PRIMARY KEY, t DOUBLE NOT NULL)")
                    state["created"] = True
                cur.execute(f"REPLACE INTO {table} VALUES ('probe', %s)", (time.time(),))
                return True
        except (pymysql.err.Error, OSError):
            conn, state["conn"] = state["conn"], None
            if conn is not None:
                with contextlib.suppress(pymysql.err.Error, OSError):
                    conn.close()
            return False
    return check


def redis_master(host: str, port: int, password: str, key: str = "halab:probe",
                 timeout: float = TIMEOUT) -> Check:
    """PING and a SET (expiring) to `key`: only a writable master passes."""
    client = redis.Redis(host=host, port=port, password=password,
                         socket_connect_timeout=timeout, socket_timeout=timeout)

    def check() -> bool:
        try:
            return bool(client.ping()) and bool(client.set(key, time.time(), px=60_000))
        except redis.exceptions.RedisError:
            return False
    return check


def healthz(inv: Declared, address: str) -> Check:
    """HAProxy's /healthz (monitor-uri) on an address."""
    return http(f"http://{address}:{inv.setting('haproxy', 'haproxy_monitor_port')}/healthz")


def from_inventory(inv: Declared) -> dict[str, Check]:
    """The standard set: public VIP health endpoint, internal VIP stats page, a write
    to Galera and one to Redis through their VIPs; Keystone's version document through
    the public endpoint of clouds.yaml, once the playbook wrote it."""
    clouds = inv.secrets_dir / "clouds.yaml"
    cloud = keystone.load(clouds) if clouds.exists() else None
    api = {"keystone": http(cloud.auth_url, cacert=cloud.cacert)} if cloud else {}
    stats, stats_port = inv.stats
    return {**api,
        "public": healthz(inv, inv.vip("public")),
        "internal": http(f"http://{stats}:{stats_port}/;csv",
                         auth=("admin", inv.secret("haproxy_stats_password"))),
        "mysql": mysql(inv.vip("internal_api"), inv.port("mysql"), "halab",
                       inv.secret("galera_user_halab"), "halab", table="halab_probe"),
        "redis": redis_master(inv.vip("redis"), inv.port("redis"), inv.secret("redis_password")),
    }


# ---------------------------------------------------------------- analysis


def outage_windows(samples: list[Sample]) -> list[list[float | None]]:
    """[start, end] of each run of failed samples: start is the first failed sample,
    end the first good one after it (None if the samples end while down)."""
    windows: list[list[float | None]] = []
    start = None
    for t, ok in sorted(samples):
        if not ok and start is None:
            start = t
        elif ok and start is not None:
            windows.append([start, t])
            start = None
    if start is not None:
        windows.append([start, None])
    return windows


def recovered_after(samples: list[Sample], t0: float, until: float | None = None) -> float | None:
    """Seconds from t0 until the service was up for good after the fault: the first
    good sample after the last failed one asked between t0 and `until` (the restore:
    later outages are the lost node's return, counted by `longest_outage`); 0.0 if
    nothing failed; None if the samples end while down (or none were taken after t0)."""
    after = sorted(s for s in samples if s[0] >= t0)
    if not after:
        return None
    last_bad = max((i for i, (t, ok) in enumerate(after)
                    if not ok and (until is None or t < until)), default=None)
    if last_bad is None:
        return 0.0
    if last_bad == len(after) - 1:
        return None
    return round(after[last_bad + 1][0] - t0, 3)


def longest_outage(samples: list[Sample], since: float) -> float:
    """The longest outage that began at or after `since` (one still going on at the
    end counts to the last sample)."""
    end = max((t for t, _ in samples), default=since)
    return round(max((((stop if stop is not None else end) - start)
                      for start, stop in outage_windows(samples) if start >= since),
                     default=0.0), 3)


class Probe:
    """Samples every check every `interval` s in its own thread until stop() or
    `max_duration`; a check that raises or answers falsy counts as down."""

    def __init__(self, checks: dict[str, Check], interval: float = 0.1,
                 max_duration: float = MAX_DURATION):
        self.checks, self.interval, self.max_duration = checks, interval, max_duration
        self.samples: dict[str, list[Sample]] = {name: [] for name in checks}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def names(self) -> list[str]:
        return list(self.checks)

    def start(self) -> None:
        for name in self.checks:
            t = threading.Thread(target=self._run, args=(name,), daemon=True,
                                 name=f"probe-{name}")
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    def __enter__(self) -> Probe:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self, name: str) -> None:
        check, out = self.checks[name], self.samples[name]
        deadline = time.monotonic() + self.max_duration
        due = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            t = time.time()  # when the question was asked
            try:
                ok = bool(check())
            except Exception:  # any failure of a check is the service being down
                ok = False
            out.append((t, ok))
            due = max(due + self.interval, time.monotonic())
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _copy(self, name: str) -> list[Sample]:
        return list(self.samples[name])

    def outages(self, name: str, since: float | None = None) -> list[list[float | None]]:
        """Outage windows of one check (those still going on at `since` or later)."""
        return [w for w in outage_windows(self._copy(name))
                if since is None or w[1] is None or w[1] >= since]

    def recovered_after(self, name: str, t0: float, until: float | None = None) -> float | None:
        return recovered_after(self._copy(name), t0, until)

    def longest_outage(self, name: str, since: float) -> float:
        return longest_outage(self._copy(name), since)

    def samples_since(self, t: float) -> dict[str, list[list]]:
        """Samples from `t` on, as JSON lists [[epoch, ok], ...] per check."""
        return {n: [[round(s, 3), ok] for s, ok in self._copy(n) if s >= t] for n in self.names}

    def down(self) -> list[str]:
        """The checks whose latest sample is bad (or that have none yet)."""
        return [n for n in self.names if not (s := self._copy(n)) or not s[-1][1]]

    def all_up(self) -> bool:
        """Every check's latest sample is good."""
        return not self.down()

    def up_for(self, seconds: float) -> bool:
        """Every check good in all its samples of the last `seconds`, with sampling
        going on for at least that long."""
        since = time.time() - seconds
        for name in self.names:
            samples = self._copy(name)
            if not samples or samples[0][0] > since:
                return False
            if not all(ok for t, ok in samples if t >= since) or not samples[-1][1]:
                return False
        return True
