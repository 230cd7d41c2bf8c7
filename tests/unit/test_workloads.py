"""The workloads' and the probe's bookkeeping, without servers: what they conclude
from recorded client outcomes and from the data read back."""

from __future__ import annotations

import hashlib
import time

import pytest

from halab.failover import probe, workloads
from halab.failover.workloads import Bank, RabbitConfirms, RedisWait, write_gaps

# ---------------------------------------------------------------- write gaps


def test_write_gaps_finds_the_longest_interval_and_lists_those_over_a_second():
    longest, gaps = write_gaps([10.0, 10.5, 13.0, 13.2, 14.9])
    assert longest == 2.5
    assert gaps == [[10.5, 13.0], [13.2, 14.9]]


def test_write_gaps_counts_the_run_boundaries():
    # writes failing from 12 until the workload stopped at 20: an 8 s gap
    longest, gaps = write_gaps([10.2, 11.0, 12.0], start=10.0, end=20.0)
    assert longest == 8.0
    assert gaps == [[12.0, 20.0]]
    assert write_gaps([], start=1.0, end=4.0) == (3.0, [[1.0, 4.0]])
    assert write_gaps([]) == (0.0, [])


# ---------------------------------------------------------------- bank


def bank(**kw) -> Bank:
    return Bank("198.51.100.50", 3306, "u", "p", "db", accounts=3, initial=10, **kw)


def test_bank_with_a_consistent_history_is_ok():
    b = bank()
    b.record_transfer("t1", "acknowledged", 1.0)
    b.record_transfer("t2", "failed")
    b.record_transfer("t3", "indeterminate")
    b.record_read(30)
    log = {"t1": (0, 1, 4), "t3": (2, 0, 1)}
    got = b.evaluate({0: 7, 1: 14, 2: 9}, log)
    assert got["ok"] is True
    assert (got["attempted"], got["acknowledged"], got["failed"], got["indeterminate"]) == (
        3, 1, 1, 1)
    assert got["indeterminate_committed"] == 1
    assert got["total_found"] == got["total_expected"] == 30
    assert got["lost_acknowledged"] == got["accounts_off_log"] == got["bad_reads"] == 0


def test_bank_reports_a_lost_acknowledged_transfer():
    b = bank()
    b.record_transfer("t1", "acknowledged")
    b.record_transfer("t2", "acknowledged")
    # t2 committed for the client, but neither its log row nor its effect survived
    got = b.evaluate({0: 8, 1: 12, 2: 10}, {"t1": (0, 1, 2)})
    assert got["lost_acknowledged"] == 1
    assert got["accounts_off_log"] == 0
    assert got["ok"] is False


def test_bank_reports_balances_the_log_does_not_explain_and_a_changed_total():
    b = bank()
    b.record_transfer("t1", "acknowledged")
    got = b.evaluate({0: 8, 1: 11, 2: 10}, {"t1": (0, 1, 2)})
    assert (got["total_found"], got["accounts_off_log"]) == (29, 1)
    assert got["ok"] is False


def test_bank_reports_a_failed_transfer_that_committed_and_unknown_log_rows():
    b = bank()
    b.record_transfer("t1", "failed")
    got = b.evaluate({0: 9, 1: 11, 2: 10}, {"t1": (0, 1, 1), "zz": (1, 0, 0)})
    assert (got["failed_but_committed"], got["unknown_in_log"]) == (1, 1)
    assert got["ok"] is False


def test_bank_counts_bad_reads_and_read_errors():
    b = bank()
    for total in (30, 29, None, 30):
        b.record_read(total)
    got = b.evaluate({0: 10, 1: 10, 2: 10}, {})
    assert (got["reads"], got["bad_reads"], got["read_errors"]) == (3, 1, 1)
    assert got["ok"] is False


def test_bank_refuses_an_unknown_outcome():
    with pytest.raises(ValueError):
        bank().record_transfer("t1", "maybe")


# ---------------------------------------------------------------- rabbitmq


def test_rabbit_confirms_bookkeeping():
    r = RabbitConfirms(["198.51.100.10"], 5672, "u", "p", run_id="abc")
    assert r.queue == "halab.failover.abc"
    for seq, confirmed in [(1, True), (2, True), (3, False), (4, True), (5, False)]:
        r.record_publish(seq, confirmed)
    got = r.evaluate([1, 2, 3, 3])
    assert (got["attempted"], got["confirmed"], got["unconfirmed"]) == (5, 3, 2)
    assert got["consumed"] == 3
    assert got["lost_confirmed"] == 1  # 4
    assert got["duplicates"] == 1
    assert got["unconfirmed_but_delivered"] == 1  # 3
    assert got["ok"] is False
    assert r.evaluate([4, 1, 2])["ok"] is True


def test_rabbit_confirms_flags_messages_it_never_published_and_leftovers():
    r = RabbitConfirms(["198.51.100.10"], 5672, "u", "p")
    r.record_publish(1, True)
    assert r.evaluate([1, 7])["unknown_delivered"] == 1
    assert r.evaluate([1], remaining=3)["ok"] is False


# ---------------------------------------------------------------- redis


def test_redis_wait_classes_writes_by_replicas_and_counts_losses_per_class():
    w = RedisWait("198.51.100.51", 6379, "p", replicas=2, run_id="r1")
    assert w.prefix == "halab:failover:r1:"
    for i, n in [(1, 2), (2, 1), (3, 0), (4, 2), (5, None), (6, 3)]:
        w.record_write(i, n)
    values = {1: b"1", 2: None, 3: b"3", 4: b"4", 5: b"5", 6: b"6"}
    got = w.evaluate(values)
    assert got["by_replicas"] == {"2": {"acknowledged": 3, "lost": 0},
                                  "1": {"acknowledged": 1, "lost": 1},
                                  "0": {"acknowledged": 1, "lost": 0}}
    assert (got["attempted"], got["acknowledged"], got["errors"]) == (6, 5, 1)
    assert got["errors_but_present"] == 1
    assert (got["lost_all_replicas"], got["partial_replication_lost"]) == (0, 1)
    assert got["ok"] is True


def test_redis_wait_a_fully_replicated_write_lost_or_changed_is_not_ok():
    w = RedisWait("198.51.100.51", 6379, "p")
    w.record_write(1, 2)
    w.record_write(2, 2)
    got = w.evaluate({1: b"1", 2: b"999"})
    assert got["lost_all_replicas"] == 1
    assert got["ok"] is False


# ---------------------------------------------------------------- threads


class Counter(workloads.Workload):
    """A workload without a server: every tick is an acknowledged write."""

    def __init__(self, fail: bool = False, **kw):
        super().__init__(**kw)
        self.fail = fail

    def _workers(self):
        return [self._loop]

    def _loop(self):
        for _ in self._ticks(self.rate):
            if self.fail:
                raise RuntimeError("boom")
            self._ack()


def test_a_workload_is_paced_and_stops():
    w = Counter(rate=20)
    w.start()
    time.sleep(0.5)
    w.stop()
    got = w._common()
    assert 5 <= len(w.ack_times) <= 13  # ~20/s for 0.5 s
    assert got["longest_gap_s"] < 0.5
    assert got["gaps"] == []
    assert got["workers_stuck"] == 0 and got["worker_crashes"] == []


def test_a_workload_ends_by_itself_after_max_duration():
    w = Counter(rate=50, max_duration=0.2)
    w.start()
    w._threads[0].join(2)
    assert not w._threads[0].is_alive()
    assert len(w.ack_times) <= 12


def test_a_crashed_worker_shows_in_the_figures():
    w = Counter(fail=True)
    w.start()
    w.stop()
    assert "RuntimeError('boom')" in w._common()["worker_crashes"][0]


# ---------------------------------------------------------------- probe analysis


SAMPLES = [(0.0, True), (1.0, False), (2.0, False), (3.0, True), (4.0, False), (5.0, True)]


def test_outage_windows_run_from_first_failure_to_next_success():
    assert probe.outage_windows(SAMPLES) == [[1.0, 3.0], [4.0, 5.0]]
    assert probe.outage_windows(SAMPLES[:5]) == [[1.0, 3.0], [4.0, None]]
    assert probe.outage_windows([(0.0, True), (1.0, True)]) == []


def test_recovered_after_is_the_end_of_the_last_outage_after_t0():
    assert probe.recovered_after(SAMPLES, 0.5) == 4.5
    assert probe.recovered_after(SAMPLES, 4.5) == 0.0  # nothing failed after it
    assert probe.recovered_after(SAMPLES[:5], 0.5) is None  # still down at the end
    assert probe.recovered_after(SAMPLES, 9.0) is None  # not observed
    # an outage that began before t0 counts until it ends
    assert probe.recovered_after([(0.0, False), (1.0, False), (2.0, True)], 0.5) == 1.5


def test_probe_samples_each_check_and_sees_failures():
    state = {"n": 0}

    def flaky() -> bool:
        state["n"] += 1
        if state["n"] in (3, 4):
            raise OSError("refused")  # a check that raises counts as down
        return True

    pr = probe.Probe({"steady": lambda: True, "flaky": flaky}, interval=0.02)
    t0 = time.time()
    with pr:
        time.sleep(0.4)
        assert pr.all_up()
        assert pr.up_for(0.1)
        assert not pr.up_for(5)  # not sampled that long
    assert pr.names == ["steady", "flaky"]
    assert 10 <= len(pr.samples["steady"]) <= 25
    assert [ok for _, ok in pr.samples["flaky"][:5]] == [True, True, False, False, True]
    (start, end), = pr.outages("flaky")
    assert start < end
    assert 0 < pr.recovered_after("flaky", t0) < 0.3
    assert pr.recovered_after("steady", t0) == 0.0
    assert pr.outages("flaky", since=time.time()) == []
    since = pr.samples_since(t0)
    assert set(since) == {"steady", "flaky"} and since["flaky"][2][1] is False


def test_probe_ends_by_itself_after_max_duration():
    pr = probe.Probe({"down": lambda: False}, interval=0.02, max_duration=0.2)
    pr.start()
    pr._threads[0].join(2)
    assert not pr._threads[0].is_alive()
    assert not pr.all_up()
    assert pr.recovered_after("down", 0) is None


def test_server_boots_follow_every_accepted_create_to_its_end():
    w = workloads.ServerBoots(session=None, image="i", flavor="f")
    w.record_create(202, "a", 100.0)
    w.record_create(202, "b", 101.0)
    w.record_create(202, "c", 102.0)
    w.record_create(503, None, 103.0)
    w.record_create(0, None, 104.0)
    w.record_final("a", "ACTIVE", 104.5)
    w.record_final("a", "ERROR", 200.0)  # the first final state seen counts
    w.record_final("b", "ERROR", 110.0)
    figures = w.evaluate(stuck=["c"], orphans=[], leaked=[])
    assert (figures["accepted"], figures["active"], figures["error"]) == (3, 1, 1)
    assert figures["refused_by_status"] == {"503": 1, "0": 1}
    assert figures["boot_s_max"] == 4.5 and w.ack_times == [104.5]
    assert figures["lost_in_build"] == ["c"] and not figures["ok"]
    assert figures["violations"] == []  # a lost write: the catalogue judges it by scenario


def test_server_boots_flag_servers_without_compute_record_and_leaks():
    w = workloads.ServerBoots(session=None, image="i", flavor="f")
    w.record_create(202, "a", 100.0)
    w.record_final("a", "ACTIVE", 103.0)
    assert w.evaluate([], [], [])["ok"]
    figures = w.evaluate([], orphans=["a"], leaked=["a"])
    assert not figures["ok"] and len(figures["violations"]) == 2


def test_image_reads_count_failures_and_flag_other_bytes():
    w = workloads.ImageReads(session=None, image="i")
    w.sha512 = hashlib.sha512(b"image").hexdigest()
    assert w.record_read(200, b"image", 1.0)
    assert not w.record_read(503, b"")
    assert not w.record_read(200, b"imagf")
    figures = w.evaluate(after=True)
    assert (figures["reads"], figures["failed"], figures["failed_by_status"]) == (1, 1, {"503": 1})
    assert len(figures["mismatched"]) == 1 and not figures["ok"]
    w2 = workloads.ImageReads(session=None, image="i")
    assert not w2.evaluate(after=False)["ok"]
    assert w2.evaluate(after=True)["ok"]
