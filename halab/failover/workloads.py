"""Jepsen-style client workloads that run through a fault and then check what the
cluster kept: a bank on Galera, confirmed publishes on RabbitMQ, WAITed writes on Redis,
tokens from Keystone, server boots through Nova, image reads through Glance.

Each workload: start() runs its clients in background threads, stop() ends them,
verify() (after the fault was repaired) reads the data back and returns figures
(JSON-serialisable). Every client operation has a short timeout and reconnects on
error, so a fault costs failed operations, never a hung worker. The bookkeeping
(record_* and evaluate) needs no server, so it is unit-tested on its own."""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pika
import pika.exceptions
import pymysql
import redis

from halab.cluster import keystone, openstack
from halab.cluster.declared import Declared

MAX_DURATION = 900.0  # a workload nobody stopped ends by itself after this long
GAP = 1.0  # write gaps longer than this are listed


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


# ---------------------------------------------------------------- bookkeeping


def write_gaps(times: list[float], start: float | None = None, end: float | None = None,
               threshold: float = GAP) -> tuple[float, list[list[float]]]:
    """Longest interval between successive acknowledged writes, and every interval
    longer than `threshold` as [start, end] (epoch). `start`/`end` (the workload's run)
    count as boundaries, so writes failing until the end still show as a gap."""
    points = sorted([*times, *(x for x in (start, end) if x is not None)])
    longest, gaps = 0.0, []
    for a, b in zip(points, points[1:], strict=False):
        longest = max(longest, b - a)
        if b - a > threshold:
            gaps.append([round(a, 3), round(b, 3)])
    return round(longest, 3), gaps


class Workload:
    """Background threads paced by a rate limit, stopped by stop() or MAX_DURATION."""

    def __init__(self, run_id: str | None = None, rate: float = 25.0,
                 max_duration: float = MAX_DURATION):
        self.run_id = run_id or new_run_id()
        self.rate = rate
        self.max_duration = max_duration
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.ack_times: list[float] = []
        self.crashes: list[str] = []
        self.stuck = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def setup(self) -> None:
        """Create what the clients need (before start); idempotent."""

    def _workers(self) -> list[Callable[[], None]]:
        raise NotImplementedError

    def start(self) -> None:
        self.setup()
        self.started_at = time.time()
        for i, fn in enumerate(self._workers()):
            t = threading.Thread(target=self._guard, args=(fn,), daemon=True,
                                 name=f"{type(self).__name__}-{i}")
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        if self.stopped_at is None:  # the run ends when asked, not when the last op returns
            self.stopped_at = time.time()
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self.stuck = sum(t.is_alive() for t in self._threads)

    def _guard(self, fn: Callable[[], None]) -> None:
        """A worker that dies on an unexpected error must show in verify(), not vanish."""
        try:
            fn()
        except Exception as exc:
            with self._lock:
                self.crashes.append(f"{threading.current_thread().name}: {exc!r}")

    def _ticks(self, rate: float) -> Iterator[None]:
        """Yield at most `rate` times a second until stop() or max_duration; a slow
        operation delays the next one rather than causing a burst."""
        period, now = 1.0 / rate, time.monotonic()
        deadline, due = now + self.max_duration, now
        while not self._stop.is_set() and time.monotonic() < deadline:
            yield
            due = max(due + period, time.monotonic())
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _ack(self, t: float | None = None) -> None:
        with self._lock:
            self.ack_times.append(time.time() if t is None else t)

    def _result(self, figures: dict) -> dict:
        """A verify()'s figures with the run's own; not ok if a worker crashed."""
        result = {**figures, **self._common()}
        result["ok"] = result["ok"] and not result["worker_crashes"]
        return result

    def _common(self) -> dict:
        start, end = self.started_at, self.stopped_at
        longest, gaps = write_gaps(self.ack_times, start, end)
        duration = (end - start) if start is not None and end is not None else None
        return {
            "run_id": self.run_id,
            "duration_s": round(duration, 2) if duration is not None else None,
            "acks_per_s": round(len(self.ack_times) / duration, 1) if duration else None,
            "longest_gap_s": longest,
            "gaps": gaps,
            "worker_crashes": list(self.crashes),
            "workers_stuck": self.stuck,
        }


def _retry(fn: Callable[[], object], errors: tuple[type[BaseException], ...],
           seconds: float = 60.0, pause: float = 1.0):
    """fn() until it succeeds or `seconds` passed (then its last error is raised):
    verify() runs right after a repair, while a service may still be settling."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except errors:
            if time.monotonic() + pause >= deadline:
                raise
            time.sleep(pause)


# ---------------------------------------------------------------- Galera: bank


MYSQL_ERRORS = (pymysql.err.Error, OSError)


class Bank(Workload):
    """Transfers between N accounts, each one transaction that also logs the transfer
    under a client-generated id; a reader checks the total. Through the MySQL VIP."""

    def __init__(self, host: str, port: int, user: str, password: str, database: str,
                 accounts: int = 10, initial: int = 100, workers: int = 2,
                 rate: float = 20.0, timeout: float = 1.5, read_rate: float = 10.0,
                 run_id: str | None = None, max_duration: float = MAX_DURATION):
        super().__init__(run_id, rate, max_duration)
        self.host, self.port, self.user, self.password = host, port, user, password
        self.database, self.accounts, self.initial = database, accounts, initial
        self.workers, self.timeout, self.read_rate = workers, timeout, read_rate
        self.t_accounts = f"bank_{self.run_id}_accounts"
        self.t_log = f"bank_{self.run_id}_log"
        self.attempted = 0
        self.acknowledged: dict[str, float] = {}  # transfer id -> time COMMIT returned
        self.failed: set[str] = set()
        self.indeterminate: set[str] = set()
        self.reads = self.bad_reads = self.read_errors = 0

    @classmethod
    def from_inventory(cls, inv: Declared, **kw) -> Bank:
        return cls(inv.vip("internal_api"), inv.port("mysql"), "halab",
                   inv.secret("galera_user_halab"), "halab", **kw)

    @property
    def total(self) -> int:
        return self.accounts * self.initial

    def _connect(self, timeout: float | None = None) -> pymysql.Connection:
        t = timeout or self.timeout
        return pymysql.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password, database=self.database,
                               connect_timeout=t, read_timeout=t, write_timeout=t,
                               autocommit=True)

    def setup(self) -> None:
        conn = self._connect(10)
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE TABLE IF NOT EXISTS {self.t_accounts} "
                            "(id INT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB")
                cur.execute(f"CREATE TABLE IF NOT EXISTS {self.t_log} "
                            "(id CHAR(32) PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, "
                            "amount INT NOT NULL, t DOUBLE NOT NULL) ENGINE=InnoDB")
                cur.executemany(f"INSERT IGNORE INTO {self.t_accounts} VALUES (%s, %s)",
                                [(i, self.initial) for i in range(self.accounts)])
        finally:
            conn.close()

    def _workers(self) -> list[Callable[[], None]]:
        return [self._transfer_loop] * self.workers + [self._read_loop]

    def record_transfer(self, tid: str, outcome: str, t: float | None = None) -> None:
        """outcome: acknowledged (COMMIT returned), failed (error before COMMIT) or
        indeterminate (error during COMMIT: it may or may not have happened)."""
        with self._lock:
            self.attempted += 1
            if outcome == "acknowledged":
                self.acknowledged[tid] = time.time() if t is None else t
                self.ack_times.append(self.acknowledged[tid])
            elif outcome == "failed":
                self.failed.add(tid)
            elif outcome == "indeterminate":
                self.indeterminate.add(tid)
            else:
                raise ValueError(outcome)

    def record_read(self, total: int | None) -> None:
        """A SUM(balance) read; None when the read failed."""
        with self._lock:
            if total is None:
                self.read_errors += 1
            else:
                self.reads += 1
                self.bad_reads += total != self.total

    def _transfer(self, conn: pymysql.Connection | None,
                  rng: random.Random) -> pymysql.Connection | None:
        """One transfer; returns the connection to reuse, None after an error."""
        a, b = rng.sample(range(self.accounts), 2)
        tid, stage = uuid.uuid4().hex, "before"
        try:
            conn = conn or self._connect()
            conn.begin()
            with conn.cursor() as cur:
                cur.execute(f"SELECT id, balance FROM {self.t_accounts} "
                            "WHERE id IN (%s, %s) FOR UPDATE", (a, b))
                bal = dict(cur.fetchall())
                src, dst = (a, b) if bal[a] >= bal[b] else (b, a)  # never below zero
                amount = min(rng.randint(1, 5), bal[src])
                cur.execute(f"UPDATE {self.t_accounts} SET balance = balance - %s "
                            "WHERE id = %s", (amount, src))
                cur.execute(f"UPDATE {self.t_accounts} SET balance = balance + %s "
                            "WHERE id = %s", (amount, dst))
                cur.execute(f"INSERT INTO {self.t_log} VALUES (%s, %s, %s, %s, %s)",
                            (tid, src, dst, amount, time.time()))
            stage = "commit"
            conn.commit()
        except (*MYSQL_ERRORS, KeyError):  # KeyError: an account row was missing
            self.record_transfer(tid, "indeterminate" if stage == "commit" else "failed")
            _close(conn)
            return None
        self.record_transfer(tid, "acknowledged")
        return conn

    def _transfer_loop(self) -> None:
        rng, conn = random.Random(), None
        for _ in self._ticks(self.rate):
            conn = self._transfer(conn, rng)
        _close(conn)

    def _read_loop(self) -> None:
        conn = None
        for _ in self._ticks(self.read_rate):
            try:
                conn = conn or self._connect()
                with conn.cursor() as cur:
                    cur.execute(f"SELECT SUM(balance) FROM {self.t_accounts}")
                    self.record_read(int(cur.fetchone()[0] or 0))
            except MYSQL_ERRORS:
                self.record_read(None)
                _close(conn)
                conn = None
        _close(conn)

    def evaluate(self, balances: dict[int, int],
                 log: dict[str, tuple[int, int, int]]) -> dict:
        """The checks, from the final balances and the transfer log {id: (src, dst,
        amount)} as read back, against what the clients recorded."""
        expected = {i: self.initial for i in range(self.accounts)}
        for src, dst, amount in log.values():
            expected[src] = expected.get(src, 0) - amount
            expected[dst] = expected.get(dst, 0) + amount
        attempted = set(self.acknowledged) | self.failed | self.indeterminate
        found = sum(balances.values())
        figures = {
            "accounts": len(balances), "total_expected": self.total, "total_found": found,
            "attempted": self.attempted, "acknowledged": len(self.acknowledged),
            "failed": len(self.failed), "indeterminate": len(self.indeterminate),
            "indeterminate_committed": len(self.indeterminate & log.keys()),
            "reads": self.reads, "bad_reads": self.bad_reads, "read_errors": self.read_errors,
            "logged": len(log),
            "lost_acknowledged": sum(tid not in log for tid in self.acknowledged),
            # an error before COMMIT means the server never committed: must be 0
            "failed_but_committed": len(self.failed & log.keys()),
            "unknown_in_log": len(log.keys() - attempted),
            "accounts_off_log": sum(balances.get(i) != v for i, v in expected.items())
                                + len(balances.keys() - expected.keys()),
            "negative_balances": sum(v < 0 for v in balances.values()),
        }
        figures["ok"] = (found == self.total and not figures["bad_reads"]
                         and not any(figures[k] for k in (
                             "lost_acknowledged", "failed_but_committed", "unknown_in_log",
                             "accounts_off_log", "negative_balances")))
        return figures

    def verify(self) -> dict:
        """Read balances and log back (retrying while the cluster settles), check, and
        drop the tables when everything holds (kept for inspection otherwise)."""
        self.stop()

        def read() -> tuple[dict[int, int], dict[str, tuple[int, int, int]]]:
            conn = self._connect(5)
            try:
                with conn.cursor() as cur:
                    cur.execute("SET SESSION wsrep_sync_wait = 1")  # causal read
                    cur.execute(f"SELECT id, balance FROM {self.t_accounts}")
                    balances = {int(i): int(b) for i, b in cur.fetchall()}
                    cur.execute(f"SELECT id, src, dst, amount FROM {self.t_log}")
                    log = {tid: (int(s), int(d), int(a)) for tid, s, d, a in cur.fetchall()}
                return balances, log
            finally:
                conn.close()

        balances, log = _retry(read, MYSQL_ERRORS)
        result = self._result(self.evaluate(balances, log))
        result["tables_kept"] = True
        if result["ok"]:
            def drop() -> None:
                conn = self._connect(5)
                try:
                    with conn.cursor() as cur:
                        cur.execute(f"DROP TABLE IF EXISTS {self.t_accounts}, {self.t_log}")
                finally:
                    conn.close()
            with contextlib.suppress(*MYSQL_ERRORS):  # the figures stand without it
                _retry(drop, MYSQL_ERRORS, seconds=20)
                result["tables_kept"] = False
        return result


def _close(conn: pymysql.Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(*MYSQL_ERRORS):
            conn.close()


# ---------------------------------------------------------------- RabbitMQ: confirms


class CallTimeout(pika.exceptions.AMQPError):
    """A blocking pika call took longer than its bound."""


def _bounded(conn: pika.BlockingConnection, seconds: float, fn: Callable, *args, **kw):
    """Run a blocking pika call, aborting it after `seconds`. BlockingConnection has no
    per-call timeout, and a confirm waits as long as the broker still believes a dead
    queue master alive (a minute of Erlang net ticks); a timer on the connection's own
    I/O loop raises out of the wait. The connection is unusable afterwards."""
    def expire() -> None:
        raise CallTimeout(f"no answer within {seconds}s")

    ioloop = conn._impl.ioloop  # private, but the only way to put a timer in the wait
    handle = ioloop.call_later(seconds, expire)
    try:
        return fn(*args, **kw)
    finally:
        ioloop.remove_timeout(handle)


AMQP_ERRORS = (pika.exceptions.AMQPError, OSError)
QUORUM = {"x-queue-type": "quorum"}


class RabbitConfirms(Workload):
    """One publisher of sequence-numbered persistent messages in confirm mode to a
    quorum queue of its own (a Raft log on every node: a confirmed message is on a
    majority), moving to the next node on error."""

    def __init__(self, hosts: list[str], port: int, user: str, password: str,
                 vhost: str = "/", queue: str | None = None, rate: float = 40.0,
                 timeout: float = 2.0, run_id: str | None = None,
                 max_duration: float = MAX_DURATION):
        super().__init__(run_id, rate, max_duration)
        self.hosts, self.port, self.vhost, self.timeout = hosts, port, vhost, timeout
        self.credentials = pika.PlainCredentials(user, password)
        self.queue = queue or f"halab.failover.{self.run_id}"
        self.attempted = self.connects = self.connect_errors = 0
        self.confirmed: set[int] = set()
        self.unconfirmed: set[int] = set()
        self._node = 0

    @classmethod
    def from_inventory(cls, inv: Declared, **kw) -> RabbitConfirms:
        return cls(list(inv.addresses("internal").values()),
                   inv.setting("rabbitmq", "rabbitmq_port"), "openstack",
                   inv.secret("rabbitmq_user_openstack"), **kw)

    def _connect(self, host: str) -> pika.BlockingConnection:
        params = pika.ConnectionParameters(
            host, self.port, self.vhost, self.credentials, connection_attempts=1,
            socket_timeout=self.timeout, stack_timeout=self.timeout * 2,
            blocked_connection_timeout=self.timeout, heartbeat=5,
            # a peer that vanished (power loss) fails the next write in 1.5 s
            tcp_options={"TCP_USER_TIMEOUT": 1500})
        return pika.BlockingConnection(params)

    def _close(self, conn: pika.BlockingConnection | None) -> None:
        if conn is not None and conn.is_open:
            with contextlib.suppress(*AMQP_ERRORS):
                _bounded(conn, self.timeout, conn.close)

    def _open_channel(self) -> tuple[pika.BlockingConnection, object]:
        """Connect to the next node in turn and declare the queue there."""
        host = self.hosts[self._node % len(self.hosts)]
        self._node += 1
        conn = self._connect(host)
        try:
            ch = _bounded(conn, self.timeout, conn.channel)
            _bounded(conn, self.timeout, ch.confirm_delivery)
            _bounded(conn, self.timeout, ch.queue_declare, self.queue, durable=True,
                     arguments=QUORUM)
        except AMQP_ERRORS:
            self._close(conn)
            raise
        return conn, ch

    def setup(self) -> None:
        conn, _ = _retry(self._open_channel, AMQP_ERRORS, seconds=10, pause=0.5)
        self._close(conn)
        self._node -= 1  # the publisher starts on the node that just answered

    def _workers(self) -> list[Callable[[], None]]:
        return [self._publish_loop]

    def record_publish(self, seq: int, confirmed: bool, t: float | None = None) -> None:
        with self._lock:
            self.attempted += 1
            if confirmed:
                self.confirmed.add(seq)
                self.ack_times.append(time.time() if t is None else t)
            else:
                self.unconfirmed.add(seq)

    def _publish_loop(self) -> None:
        conn, ch, seq = None, None, 0
        props = pika.BasicProperties(delivery_mode=2)
        for _ in self._ticks(self.rate):
            if ch is None:
                try:
                    conn, ch = self._open_channel()
                    self.connects += 1
                except AMQP_ERRORS:
                    self.connect_errors += 1
                    continue
            seq += 1
            try:
                _bounded(conn, self.timeout, ch.basic_publish, "", self.queue,
                         str(seq).encode(), props, mandatory=True)
            except AMQP_ERRORS:
                self.record_publish(seq, False)  # in flight: may still be delivered
                self._close(conn)
                conn = ch = None
                continue
            self.record_publish(seq, True)
        self._close(conn)

    def evaluate(self, delivered: list[int], remaining: int = 0) -> dict:
        """The checks from the sequence numbers consumed back (in delivery order)."""
        seen = set(delivered)
        attempted = self.confirmed | self.unconfirmed
        figures = {
            "queue": self.queue, "attempted": self.attempted,
            "confirmed": len(self.confirmed), "unconfirmed": len(self.unconfirmed),
            "connects": self.connects, "connect_errors": self.connect_errors,
            "consumed": len(seen), "remaining": remaining,
            "lost_confirmed": len(self.confirmed - seen),
            "duplicates": len(delivered) - len(seen),
            "unconfirmed_but_delivered": len(self.unconfirmed & seen),
            "unknown_delivered": len(seen - attempted),
        }
        figures["ok"] = not (figures["lost_confirmed"] or figures["unknown_delivered"]
                             or remaining)
        return figures

    def _drain(self, host: str, delivered: list[int], seen: set[int]) -> int:
        """Consume everything from `host` into `delivered`; the count left afterwards."""
        conn, t = self._connect(host), 10.0
        try:
            ch = _bounded(conn, t, conn.channel)
            _bounded(conn, t, ch.basic_qos, prefetch_count=200)
            deadline = time.monotonic() + 300
            for method, _, body in ch.consume(self.queue, inactivity_timeout=2.0):
                if method is None or time.monotonic() > deadline:
                    break
                seq = int(body)
                # a message this verify already saw and lost with a connection comes back
                if not (method.redelivered and seq in seen):
                    delivered.append(seq)
                    seen.add(seq)
                ch.basic_ack(method.delivery_tag)
            _bounded(conn, t, ch.cancel)
            left = _bounded(conn, t, ch.queue_declare, self.queue,
                            passive=True).method.message_count
            if not left:
                _bounded(conn, t, ch.queue_delete, self.queue)
            return left
        finally:
            self._close(conn)

    def verify(self) -> dict:
        """Consume the queue from any node that answers, check, delete the queue."""
        self.stop()
        delivered: list[int] = []
        seen: set[int] = set()
        remaining, missing, not_found, not_found_total = -1, False, 0, 0
        deadline = time.monotonic() + 120
        for i in range(60):  # rounds over the nodes, also bounded by the deadline
            if time.monotonic() > deadline:
                break
            try:
                remaining = self._drain(self.hosts[i % len(self.hosts)], delivered, seen)
                not_found = 0
            except pika.exceptions.ChannelClosedByBroker as exc:
                # A node that has just rejoined (its database wiped by the agent) answers
                # 404 until it has the cluster's tables: gone only when every node says so
                # twice in a row.
                not_found = not_found + 1 if exc.reply_code == 404 else 0
                not_found_total += exc.reply_code == 404
                if not_found >= 2 * len(self.hosts):
                    remaining, missing = 0, True
                    break
                time.sleep(1)
                continue
            except AMQP_ERRORS:
                time.sleep(1)
                continue
            if remaining == 0:
                break
        result = self._result(self.evaluate(delivered, max(remaining, 0)))
        result["queue_missing"] = missing
        result["not_found_answers"] = not_found_total  # 404s for a queue that exists
        result["ok"] = result["ok"] and remaining == 0
        return result


# ---------------------------------------------------------------- Redis: WAIT


class RedisWait(Workload):
    """SET halab:failover:<run>:<i> then WAIT <replicas> on the same connection (one
    pipeline), through the Redis VIP; each acknowledged write is classed by how many
    replicas WAIT reported."""

    def __init__(self, host: str, port: int, password: str, replicas: int = 2,
                 wait_ms: int = 500, rate: float = 40.0, timeout: float = 1.0,
                 run_id: str | None = None, max_duration: float = MAX_DURATION):
        super().__init__(run_id, rate, max_duration)
        self.host, self.port, self.password = host, port, password
        self.replicas, self.wait_ms, self.timeout = replicas, wait_ms, timeout
        self.prefix = f"halab:failover:{self.run_id}:"
        self.attempted = 0
        self.acknowledged: dict[int, int] = {}  # i -> replicas WAIT reported
        self.errors: set[int] = set()  # SET failed or unknown: the write may exist
        self.wait_errors = 0

    @classmethod
    def from_inventory(cls, inv: Declared, **kw) -> RedisWait:
        return cls(inv.vip("redis"), inv.port("redis"), inv.secret("redis_password"), **kw)

    def _client(self, timeout: float | None = None) -> redis.Redis:
        t = timeout or self.timeout
        return redis.Redis(host=self.host, port=self.port, password=self.password,
                           socket_connect_timeout=t,
                           socket_timeout=t + self.wait_ms / 1000)

    def _workers(self) -> list[Callable[[], None]]:
        return [self._write_loop]

    def record_write(self, i: int, replicas: int | None, t: float | None = None) -> None:
        """replicas: what WAIT reported (its error counts as 0); None: SET failed."""
        with self._lock:
            self.attempted = max(self.attempted, i)
            if replicas is None:
                self.errors.add(i)
            else:
                self.acknowledged[i] = min(replicas, self.replicas)
                self.ack_times.append(time.time() if t is None else t)

    def _write_loop(self) -> None:
        client, i = self._client(), 0
        for _ in self._ticks(self.rate):
            i += 1
            try:
                pipe = client.pipeline(transaction=False)
                pipe.set(f"{self.prefix}{i}", i)
                pipe.execute_command("WAIT", self.replicas, self.wait_ms)
                set_ok, waited = pipe.execute(raise_on_error=False)
            except redis.exceptions.RedisError:  # the pool reconnects on the next call
                self.record_write(i, None)
                continue
            if set_ok is not True:  # e.g. READONLY from a demoted master
                self.record_write(i, None)
            elif isinstance(waited, int):
                self.record_write(i, waited)
            else:
                self.wait_errors += 1
                self.record_write(i, 0)
        client.close()

    def evaluate(self, values: dict[int, bytes | None]) -> dict:
        """The checks from the values read back {i: value or None}."""
        classes = {str(n): {"acknowledged": 0, "lost": 0} for n in range(self.replicas + 1)}
        for i, n in self.acknowledged.items():
            classes[str(n)]["acknowledged"] += 1
            classes[str(n)]["lost"] += values.get(i) != str(i).encode()
        figures = {
            "attempted": self.attempted, "acknowledged": len(self.acknowledged),
            "errors": len(self.errors), "wait_errors": self.wait_errors,
            "errors_but_present": sum(values.get(i) is not None for i in self.errors),
            "by_replicas": classes,
            # WAIT said every replica had it: the one class Redis's failover must keep
            "lost_all_replicas": classes[str(self.replicas)]["lost"],
            "partial_replication_lost": sum(c["lost"] for n, c in classes.items()
                                             if n != str(self.replicas)),
        }
        figures["ok"] = not figures["lost_all_replicas"]
        return figures

    def verify(self) -> dict:
        """Read every key back through the VIP (the master now), check, delete them."""
        self.stop()
        client = self._client(5)
        keys = [f"{self.prefix}{i}" for i in range(1, self.attempted + 1)]
        values: dict[int, bytes | None] = {}
        for n in range(0, len(keys), 500):
            chunk = keys[n:n + 500]
            got = _retry(lambda c=chunk: client.mget(c), (redis.exceptions.RedisError,))
            values.update(zip(range(n + 1, n + 1 + len(chunk)), got, strict=True))
        result = self._result(self.evaluate(values))
        result["keys_kept"] = True
        with contextlib.suppress(redis.exceptions.RedisError):  # the figures stand
            for n in range(0, len(keys), 500):
                _retry(lambda c=keys[n:n + 500]: client.delete(*c),
                       (redis.exceptions.RedisError,), seconds=20)
            result["keys_kept"] = False
        client.close()
        return result


# ---------------------------------------------------------------- Keystone: tokens


PASSWORD_EVERY = 5  # tokens: one in five by password, the others by token


class Tokens(Workload):
    """`openstack token issue` as the API sees it: POST /v3/auth/tokens through the
    public VIP (by password, or from the last password token), each token then
    validated through the same VIP (HAProxy balances round robin, so mostly on another
    node). After the fault, verify() has every node issue a token that every node must
    accept: the fernet keys are the same everywhere."""

    def __init__(self, cloud: keystone.Cloud, node_urls: dict[str, str], workers: int = 2,
                 rate: float = 1.0, timeout: float = 5.0, run_id: str | None = None,
                 max_duration: float = MAX_DURATION):
        super().__init__(run_id, rate, max_duration)
        self.cloud, self.node_urls = cloud, node_urls
        self.workers, self.timeout = workers, timeout
        self.issued = 0
        self.failed: dict[str, int] = {}  # HTTP status ("0": no answer) -> count
        self.validated = self.validation_errors = 0
        self.refused: list[int] = []  # statuses of valid tokens said to be invalid

    @classmethod
    def from_inventory(cls, inv: Declared, **kw) -> Tokens:
        """Credentials and the public endpoint from the lab's clouds.yaml; the nodes'
        own Keystones behind HAProxy."""
        cloud = keystone.load(inv.secrets_dir / "clouds.yaml")
        port = inv.backend_port("keystone")
        return cls(cloud, {n: f"http://{a}:{port}" for n, a in inv.addresses().items()},
                   **kw)

    def _workers(self) -> list[Callable[[], None]]:
        return [self._loop] * self.workers

    def record_issue(self, status: int, t: float | None = None) -> None:
        with self._lock:
            if status == 201:
                self.issued += 1
                self.ack_times.append(time.time() if t is None else t)
            else:
                self.failed[str(status)] = self.failed.get(str(status), 0) + 1

    def record_validation(self, status: int) -> None:
        """200: accepted; 401/404: a valid token refused; anything else: an error."""
        with self._lock:
            if status == 200:
                self.validated += 1
            elif status in (401, 404):
                self.refused.append(status)
            else:
                self.validation_errors += 1

    def _loop(self) -> None:
        # Every PASSWORD_EVERY-th token by password (bcrypt: most of the CPU the
        # workload costs the nodes), the others from the last password token.
        base = None
        for n, _ in enumerate(self._ticks(self.rate)):
            by_password = base is None or n % PASSWORD_EVERY == 0
            token, status = keystone.issue_status(self.cloud, self.timeout,
                                                  None if by_password else base)
            self.record_issue(status)
            if by_password and token:
                base = token
            if token:
                self.record_validation(keystone.validate(self.cloud.auth_url, token,
                                                         self.timeout, self.cloud.cacert))

    def cross_node(self) -> list[str]:
        """issuer->validator pairs whose validation failed, every node with every node."""
        refused = []
        for a, url in self.node_urls.items():
            def issue(u=url) -> str:
                token = keystone.issue(self.cloud.at(u), self.timeout)[0]
                if token is None:
                    raise OSError(f"no token from {u}")
                return token
            token = _retry(issue, (OSError,))
            for b, other in self.node_urls.items():
                status = self._verdict(f"{other}/v3", token)
                if status != 200:
                    refused.append(f"{a}->{b} (HTTP {status or 'no answer'})")
        return refused

    def _verdict(self, auth_url: str, token: str, patience: float = 30) -> int:
        """A node's answer on a token: 200, or a refusal (401, 403, 404). The first
        request to a just-started Keystone loads the application and may outlast the
        client's timeout: a node that does not answer yet is asked again."""
        deadline = time.monotonic() + patience
        while True:
            status = keystone.validate(auth_url, token, self.timeout)
            if status in (200, 401, 403, 404) or time.monotonic() > deadline:
                return status
            time.sleep(0.5)

    def evaluate(self, cross_refused: list[str]) -> dict:
        figures = {
            "issued": self.issued, "failed": sum(self.failed.values()),
            "failed_by_status": dict(self.failed), "validated": self.validated,
            "validation_errors": self.validation_errors, "refused": len(self.refused),
            "cross_node_checked": len(self.node_urls) ** 2,
            "cross_node_refused": cross_refused,
            "violations": [],
        }
        if self.refused:
            figures["violations"].append(
                f"{len(self.refused)} valid tokens refused (HTTP {sorted(set(self.refused))})")
        if cross_refused:
            figures["violations"].append(f"tokens refused across nodes: {cross_refused}")
        figures["ok"] = not figures["violations"]
        return figures

    def verify(self) -> dict:
        self.stop()
        try:
            cross = self.cross_node()
        except OSError as exc:  # a node that cannot issue at all, after the repair
            cross = [f"issue failed: {exc}"]
        result = self._result(self.evaluate(cross))
        return result


# ---------------------------------------------------------------- Nova: server boots


BOOT_DEADLINE = 120.0  # an accepted create must be ACTIVE or ERROR by then
FINAL = ("ACTIVE", "ERROR")


def admin_session(inv: Declared) -> openstack.Session:
    """One session (token and catalog) as the lab's admin, from clouds.yaml."""
    return openstack.Session(keystone.load(inv.secrets_dir / "clouds.yaml"))


class ServerBoots(Workload):
    """`openstack server create --nic none`, waited for, then deleted, a few at a time
    through the public VIP: API -> conductor -> scheduler -> (fake) compute over
    RabbitMQ. verify() follows every create the API accepted to ACTIVE or ERROR within
    BOOT_DEADLINE, checks each ACTIVE server has a compute host and an allocation in
    Placement, and deletes them all. An ACTIVE server is the acknowledged write."""

    def __init__(self, session: openstack.Session, image: str, flavor: str,
                 workers: int = 2, rate: float = 0.5, poll: float = 1.0,
                 patience: float = 30.0,
                 run_id: str | None = None, max_duration: float = MAX_DURATION):
        super().__init__(run_id, rate, max_duration)
        self.session, self.image_name, self.flavor_name = session, image, flavor
        self.workers, self.poll, self.patience = workers, poll, patience
        self.image_id = self.flavor_id = ""
        self.accepted: dict[str, float] = {}  # server id -> when the API accepted it
        self.final: dict[str, str] = {}  # server id -> ACTIVE | ERROR, as first seen
        self.refused: dict[str, int] = {}  # HTTP status ("0": no answer) -> count
        self.boot_s: list[float] = []  # accepted -> ACTIVE
        self.request_ids: dict[str, str] = {}  # server id -> the create's request id
        self._n = 0

    @classmethod
    def from_inventory(cls, inv: Declared, session: openstack.Session | None = None,
                       **kw) -> ServerBoots:
        return cls(session or admin_session(inv), inv.setting("glance", "glance_image")["name"],
                   inv.setting("nova", "nova_flavor")["name"], **kw)

    def setup(self) -> None:
        self.image_id = openstack.find_id(self.session, "image", "/v2/images", "images",
                                          self.image_name)
        self.flavor_id = openstack.find_id(self.session, "compute", "/flavors", "flavors",
                                           self.flavor_name)

    def _workers(self) -> list[Callable[[], None]]:
        return [self._loop] * self.workers

    @property
    def prefix(self) -> str:
        return f"halab-boot-{self.run_id}-"

    def record_create(self, status: int, server_id: str | None, t: float) -> None:
        with self._lock:
            if status == 202 and server_id:
                self.accepted[server_id] = t
            else:
                self.refused[str(status)] = self.refused.get(str(status), 0) + 1

    def record_final(self, server_id: str, state: str, t: float) -> None:
        with self._lock:
            if server_id in self.final:
                return
            self.final[server_id] = state
            if state == "ACTIVE":
                self.ack_times.append(t)
                self.boot_s.append(round(t - self.accepted[server_id], 2))

    def _create(self) -> str | None:
        with self._lock:
            self._n += 1
            name = f"{self.prefix}{self._n}"
        body = {"server": {"name": name, "imageRef": self.image_id,
                           "flavorRef": self.flavor_id, "networks": "none"}}
        status, headers, data = self.session.compute("POST", "/servers", body)
        server_id = data.get("server", {}).get("id") if status == 202 else None
        self.record_create(status, server_id, time.time())
        if server_id:  # Nova logs it in every service that handles the boot
            self.request_ids[server_id] = next(
                (v for k, v in headers.items() if k.lower() == "x-openstack-request-id"), "")
        return server_id

    def _server(self, server_id: str) -> dict:
        status, _, data = self.session.compute("GET", f"/servers/{server_id}")
        return data.get("server", {}) if status == 200 else {}

    def _state(self, server_id: str) -> str | None:
        return self._server(server_id).get("status")

    def where(self, server_id: str) -> dict:
        """Where a boot stopped, as Nova shows it to an admin: which compute host it was
        given (none: it never left the conductor or the scheduler) and its task."""
        server = self._server(server_id)
        return {"id": server_id, "accepted": round(self.accepted[server_id], 2),
                "request_id": self.request_ids.get(server_id, ""),
                "host": server.get("OS-EXT-SRV-ATTR:host"),
                "vm_state": server.get("OS-EXT-STS:vm_state"),
                "task_state": server.get("OS-EXT-STS:task_state")}

    def _follow(self, server_id: str, until_stop: bool, patience: float = BOOT_DEADLINE) -> None:
        """Poll until ACTIVE or ERROR, the deadline, `patience` seconds, or (for a
        worker) stop()."""
        deadline = min(self.accepted[server_id] + BOOT_DEADLINE, time.time() + patience)
        while True:  # one look at least: verify() may come after the deadline
            state = self._state(server_id)
            if state in FINAL:
                self.record_final(server_id, state, time.time())
                return
            if time.time() >= deadline or (until_stop and self._stop.is_set()):
                return
            time.sleep(self.poll)

    def _delete(self, server_id: str) -> int:
        return self.session.compute("DELETE", f"/servers/{server_id}")[0]

    def _loop(self) -> None:
        # A boot that hangs (its message lost) is left to verify(): a worker waiting the
        # whole deadline on it would show as a gap in the boots, which it is not.
        for _ in self._ticks(self.rate):
            server_id = self._create()
            if server_id:
                self._follow(server_id, until_stop=True, patience=self.patience)
                if server_id in self.final:
                    self._delete(server_id)

    def _mine(self) -> list[dict]:
        status, _, data = self.session.compute(
            "GET", f"/servers/detail?all_tenants=1&name={quote('^' + self.prefix)}")
        if status != 200:
            raise OSError(f"server list: HTTP {status or 'no answer'}")
        return data.get("servers", [])

    def _allocated(self, server_id: str) -> bool:
        status, _, data = self.session.call("GET", "placement", f"/allocations/{server_id}")
        return status == 200 and bool(data.get("allocations"))

    def orphans(self, servers: list[dict]) -> list[str]:
        """ACTIVE servers with no compute host or no allocation in Placement."""
        return [s["id"] for s in servers if s.get("status") == "ACTIVE" and
                not (s.get("OS-EXT-SRV-ATTR:host") and self._allocated(s["id"]))]

    def _clean_up(self) -> list[str]:
        """Delete every server of this run; the ids still listed after 120 s."""
        deadline = time.monotonic() + 120
        asked: set[str] = set()
        while time.monotonic() < deadline:
            left = _retry(self._mine, (OSError,))
            for s in left:
                if s["id"] not in asked or s.get("status") == "ERROR":
                    self._delete(s["id"])
                    asked.add(s["id"])
            if not left:
                return []
            time.sleep(2)
        return [s["id"] for s in _retry(self._mine, (OSError,))]

    def evaluate(self, stuck: list[dict], orphans: list[str], leaked: list[str]) -> dict:
        states = list(self.final.values())
        boots = sorted(self.boot_s)
        figures = {
            "accepted": len(self.accepted), "active": states.count("ACTIVE"),
            "error": states.count("ERROR"), "refused": sum(self.refused.values()),
            "refused_by_status": dict(self.refused),
            "boot_s_median": boots[len(boots) // 2] if boots else None,
            "boot_s_max": boots[-1] if boots else None,
            # accepted, yet neither ACTIVE nor ERROR after BOOT_DEADLINE: a lost write
            "lost_in_build": stuck, "stuck": len(stuck), "without_compute_record": orphans,
            "not_deleted": leaked, "violations": [],
        }
        if orphans:
            figures["violations"].append(
                f"ACTIVE servers with no compute host or allocation: {orphans}")
        if leaked:
            figures["violations"].append(f"servers not deleted after 120s: {leaked}")
        figures["ok"] = not figures["violations"] and not stuck
        return figures

    def verify(self) -> dict:
        self.stop()
        for server_id in list(self.accepted):
            if server_id not in self.final:
                self._follow(server_id, until_stop=False)
        stuck = [self.where(i) for i in self.accepted if i not in self.final]
        orphans = self.orphans(_retry(self._mine, (OSError,)))
        return self._result(self.evaluate(stuck, orphans, self._clean_up()))


# ---------------------------------------------------------------- Glance: image reads


class ImageReads(Workload):
    """`openstack image save` through the public VIP: glance-api streams the image
    from Swift. Every read that returns must match the checksum Glance recorded at
    upload (os_hash_value, SHA-512); a read that fails is an outage, one that returns
    other bytes is a violation. A successful read is the acknowledged operation."""

    def __init__(self, session: openstack.Session, image: str, workers: int = 1,
                 rate: float = 2.0, run_id: str | None = None,
                 max_duration: float = MAX_DURATION):
        super().__init__(run_id, rate, max_duration)
        self.session, self.image_name, self.workers = session, image, workers
        self.image_id = self.sha512 = ""
        self.size = 0
        self.reads = 0
        self.failed: dict[str, int] = {}
        self.mismatched: list[str] = []

    @classmethod
    def from_inventory(cls, inv: Declared, session: openstack.Session | None = None,
                       **kw) -> ImageReads:
        return cls(session or admin_session(inv), inv.setting("glance", "glance_image")["name"],
                   **kw)

    def setup(self) -> None:
        self.image_id = openstack.find_id(self.session, "image", "/v2/images", "images",
                                          self.image_name)
        status, _, data = self.session.call("GET", "image", f"/v2/images/{self.image_id}")
        if status != 200 or data.get("os_hash_algo") != "sha512":
            raise OSError(f"image {self.image_name}: HTTP {status}, no SHA-512 recorded")
        self.sha512, self.size = data["os_hash_value"], data["size"]

    def _workers(self) -> list[Callable[[], None]]:
        return [self._loop] * self.workers

    def record_read(self, status: int, body: bytes, t: float | None = None) -> bool:
        with self._lock:
            if status != 200:
                self.failed[str(status)] = self.failed.get(str(status), 0) + 1
                return False
            digest = hashlib.sha512(body).hexdigest()
            if digest != self.sha512:
                self.mismatched.append(f"{len(body)} bytes, sha512 {digest[:16]}...")
                return False
            self.reads += 1
            self.ack_times.append(time.time() if t is None else t)
            return True

    def read(self) -> bool:
        status, _, body = self.session.call("GET", "image", f"/v2/images/{self.image_id}/file",
                                            raw=True)
        return self.record_read(status, body)

    def _loop(self) -> None:
        for _ in self._ticks(self.rate):
            self.read()

    def evaluate(self, after: bool) -> dict:
        figures = {"reads": self.reads, "failed": sum(self.failed.values()),
                   "failed_by_status": dict(self.failed), "size": self.size,
                   "corrupt": len(self.mismatched), "mismatched": list(self.mismatched),
                   "read_after_repair": after,
                   "violations": []}
        if self.mismatched:
            figures["violations"].append(
                f"{len(self.mismatched)} reads returned other bytes: {self.mismatched[:3]}")
        if not after:
            figures["violations"].append("the image could not be read after the repair")
        figures["ok"] = not figures["violations"]
        return figures

    def verify(self) -> dict:
        self.stop()

        def once() -> None:
            if not self.read():
                raise OSError("read failed")
        try:
            _retry(once, (OSError,))
            after = True
        except OSError:
            after = False
        return self._result(self.evaluate(after))
