"""The pure parts of the failover machinery: crm_mon and fence history parsing, the
health verdict, and the split-brain window of the VIP watch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from halab.cluster import crm
from halab.failover import catalogue
from halab.failover.result import Result

NODES = ["n0", "n1", "n2"]
HOSTVARS = {
    "pacemaker_resources": [
        {"id": "ip-a"},
        {"id": "haproxy", "clone": {"id": "haproxy-clone"}},
        {"id": "redis", "promotable": {"id": "redis-master", "meta": {"promoted-max": "1"}}},
    ],
    "pacemaker_stonith": [{"id": "fence-n0", "options": {"pcmk_host_list": "n0"}}],
}


def crm_mon(ip_on=("n0",), haproxy_on=NODES, master="n1", fence_on="n1", online=NODES,
            failure=False, quorum=True) -> str:
    def rsc(rid, where, role="Started"):
        return "".join(f'<resource id="{rid}" role="{role}" active="true" failed="false">'
                       f'<node name="{n}"/></resource>' for n in where)

    nodes = "".join(f'<node name="{n}" online="{str(n in online).lower()}" standby="false" '
                    f'type="member"/>' for n in NODES)
    return (
        f'<pacemaker-result><summary><current_dc present="true" name="n0" '
        f'with_quorum="{str(quorum).lower()}"/></summary><nodes>{nodes}</nodes><resources>'
        + rsc("ip-a", ip_on)
        + '<clone id="haproxy-clone">' + rsc("haproxy", haproxy_on) + "</clone>"
        + '<clone id="redis-master">' + rsc("redis", [master], "Promoted")
        + rsc("redis", [n for n in NODES if n != master], "Unpromoted") + "</clone>"
        + rsc("fence-n0", [fence_on])
        + "</resources>"
        + ('<failures><failure op_key="redis_monitor_0" node="n1"/></failures>' if failure else "")
        + "</pacemaker-result>"
    )


def verdict(**kw) -> str | None:
    return crm.unhealthy(crm.state(crm_mon(**kw)), HOSTVARS, set(NODES))


def test_state_groups_clone_instances_under_the_clone():
    st = crm.state(crm_mon())
    assert st["dc"] == "n0" and st["quorum"]
    assert sorted(st["started"]["haproxy-clone"]) == NODES
    assert st["roles"]["redis-master"] == {"Promoted": ["n1"], "Unpromoted": ["n0", "n2"]}
    assert st["started"]["ip-a"] == ["n0"]


def test_the_declared_steady_state_is_healthy():
    assert verdict() is None


@pytest.mark.parametrize(("kw", "reason"), [
    ({"quorum": False}, "no quorum"),
    ({"online": ["n0", "n1"]}, "online"),
    ({"failure": True}, "failed actions"),
    ({"ip_on": ("n0", "n1")}, "ip-a on"),
    ({"ip_on": ()}, "ip-a on"),
    ({"haproxy_on": ["n0", "n1"]}, "haproxy-clone on"),
    ({"fence_on": "n0"}, "fence-n0 on"),  # a device on the node it fences
])
def test_each_departure_from_the_declared_state_is_named(kw, reason):
    assert reason in (verdict(**kw) or "")


def test_fence_events_carry_epoch_seconds():
    xml = ('<pacemaker-result><fence_history>'
           '<fence_event action="reboot" target="n2" status="success" '
           'completed="2026-11-26 12:00:05Z"/>'
           '<fence_event action="reboot" target="n2" status="failed"/>'
           '</fence_history></pacemaker-result>')
    events = crm.fence_events(xml)
    assert events[0]["at"] == 1795694405
    assert "at" not in events[1]
    assert [e["status"] for e in crm.fenced_since(xml, 1795694405)] == ["success"]
    assert crm.fenced_since(xml, 1795694406) == []
    assert crm.fenced_since(xml, 1, status="failed") == []  # no completion time


def test_vip_watch_measures_the_longest_double_holding():
    class Stand:
        vips = {"public": "a"}
        names = ["n0", "n1"]
    watch = catalogue.VipWatch(Stand(), interval=0.1)

    def ticks(*held):  # each node read at the tick itself
        return [(t / 10, {"a": h}, {"n0": t / 10, "n1": t / 10}) for t, h in enumerate(held)]
    watch.samples = ticks(["n0"], ["n0", "n1"], ["n0", "n1"], ["n1"], ["n0", "n1"], ["n1"])
    assert watch.doubled_s() == 0.2
    assert watch.owner_since("a", 0.0) == ("n1", 0.5)
    watch.samples = ticks(["n0"], [], ["n1"])
    assert watch.doubled_s() == 0.0
    assert watch.owner_since("a", 0.0) == ("n1", 0.2)


def test_a_dead_holders_last_reading_is_no_double_holding():
    """n0 loses power after its reading at 0.1; that reading is still fresh when n1
    takes the VIP at 0.2 (seen in a partition run as 'up on two nodes for 0.41s')."""
    class Stand:
        vips = {"public": "a"}
        names = ["n0", "n1"]
    watch = catalogue.VipWatch(Stand(), interval=0.1)
    watch.samples = [(0.0, {"a": ["n0"]}, {"n0": 0.0, "n1": 0.0}),
                     (0.1, {"a": ["n0"]}, {"n0": 0.1, "n1": 0.1}),
                     (0.2, {"a": ["n0", "n1"]}, {"n0": 0.1, "n1": 0.2}),
                     (0.3, {"a": ["n0", "n1"]}, {"n0": 0.1, "n1": 0.3}),
                     (0.4, {"a": ["n1"]}, {"n0": None, "n1": 0.4})]
    assert watch.doubled_s() == 0.0
    # A holder out of sight stays one: seen with the VIP again, the gap counts.
    watch.samples[3:] = [(0.3, {"a": ["n1"]}, {"n0": None, "n1": 0.3}),
                         (0.4, {"a": ["n0", "n1"]}, {"n0": 0.4, "n1": 0.4})]
    assert watch.doubled_s() == 0.3


def test_every_catalogue_entry_has_a_fault_and_an_observation():
    for spec in catalogue.CATALOGUE.values():
        assert spec.kind in catalogue.INJECT and spec.kind in catalogue.OBSERVE, spec.name
        if spec.kind == "kill":
            assert spec.process and spec.primitive, spec.name
    assert set(catalogue.REPORT_SCENARIOS) <= set(catalogue.CATALOGUE)


def test_the_gate_waits_for_an_idle_controller():
    # crmadmin's quiet answer for the DC, as the lab's nodes print it
    assert crm.dc_idle("S_IDLE\n")
    assert not crm.dc_idle("S_TRANSITION_ENGINE\n")
    assert not crm.dc_idle("error: Could not connect to controller: Connection refused")
    assert not crm.dc_idle("")


def test_a_fault_is_timed_from_when_it_took_effect():
    """The figures count from the moment the backend reports, kept in the result: the
    run's own t0 reads it from there."""
    r = catalogue.Run(catalogue.CATALOGUE["partition"], cluster=None,
                      result=Result(victim="n2", t0=1_700_000_000.0))
    catalogue._took_effect(r, 1_700_000_005.5)
    assert (r.result.inject_s, r.result.t0, r.t0) == (5.5, 1_700_000_005.5, 1_700_000_005.5)


def _probe(windows: dict[str, list[tuple[float, float]]], t0: float):
    from halab.failover import probe

    pr = probe.Probe(dict.fromkeys(windows, lambda: True))  # never started: samples below
    for name, downs in windows.items():
        pr.samples[name] = [(t0 + i / 10, not any(a <= i / 10 < b for a, b in downs))
                            for i in range(-20, 200)]
    return pr


def test_the_peer_ratio_takes_each_vips_first_answer_after_the_fault():
    t0 = 1_700_000_000.0
    # keepalived's VIP back after 3.8 s, then moved once more to follow the public VIP
    pr = _probe({"public": [(0.1, 5.0)], "keepalived:peer": [(0.1, 3.8), (6.0, 6.5)]}, t0)
    r = catalogue.Run(catalogue.CATALOGUE["power-loss-public-vip-owner"], cluster=None,
                      result=Result(victim="n0", t0=t0, public_owner_before="n0", services={
                          s: catalogue._service(pr, s, t0, t0 + 15) for s in pr.names}))
    assert r.result.services["keepalived:peer"]["first_back_s"] == 3.8
    assert r.result.services["keepalived:peer"]["recovered_s"] == 6.5
    catalogue._peer(r)
    assert r.result.peer == {"peer": {"pacemaker_vip_back_s": 5.0,
                                      "keepalived_vip_back_s": 3.8, "ratio": 1.32}}


def test_no_peer_figure_when_the_fault_spared_the_vips_owner():
    t0 = 1_700_000_000.0
    pr = _probe({"public": [], "keepalived:peer": []}, t0)
    r = catalogue.Run(catalogue.CATALOGUE["power-loss-redis-master"], cluster=None,
                      result=Result(victim="n1", t0=t0, public_owner_before="n0", services={
                          s: catalogue._service(pr, s, t0, t0 + 15) for s in pr.names}))
    assert r.result.services["public"]["first_back_s"] == 0.0
    catalogue._peer(r)
    assert r.result.peer is None


def test_a_refused_start_all_is_a_violation_kept_in_a_bundle_before_the_local_starts(
        monkeypatch):
    """pcsd answers 400 when its node's own start failed: the run fails with the reply,
    the records are taken first, then each node is started so the next test has a
    cluster."""
    import subprocess

    calls: list[str] = []

    class Nodes:
        names = ["n0", "n1", "n2"]

        def sh(self, name, command, timeout=None, check=True):
            calls.append(f"{name}: {command}")
            rc = 1 if command.endswith("--all") and "start" in command else 0
            return subprocess.CompletedProcess(command, rc, "", "Error: n1: HTTP error: 400")

    monkeypatch.setattr(catalogue, "_bundle", lambda r, pr=None: calls.append("bundle"))
    r = catalogue.Run(catalogue.CATALOGUE["full-restart"], cluster=Nodes(), result=Result())
    restore = catalogue._inject_full(r, {})
    restore()
    assert calls == ["n0: pcs cluster stop --all", "n0: pcs cluster start --all", "bundle",
                     "n0: pcs cluster start", "n1: pcs cluster start", "n2: pcs cluster start"]
    assert r.result.start_all_error == "Error: n1: HTTP error: 400"
    assert r.violations == ["pcs cluster start --all failed: Error: n1: HTTP error: 400"]


def test_a_planned_stop_bans_the_single_promoted_role_first_and_clears_it_after(
        monkeypatch):
    """The rolling restart bans Redis's master from the node about to stop (and waits
    for the promotion elsewhere), and clears the ban once that node is back; Galera,
    promoted everywhere, is left alone."""
    import subprocess

    calls: list[str] = []
    master = ["n0"]

    class Nodes:
        names = NODES
        hv = {"pacemaker_resources": HOSTVARS["pacemaker_resources"] + [
            {"id": "galera", "promotable": {"id": "galera-master",
                                            "meta": {"promoted-max": "3"}}}]}

        def state(self, avoid=()):
            return crm.state(crm_mon(master=master[0]))

        def sh(self, name, command, timeout=None, check=True):
            calls.append(f"{name}: {command}")
            if "resource ban" in command:
                master[0] = NODES[(NODES.index(command.split()[4]) + 1) % len(NODES)]
            return subprocess.CompletedProcess(command, 0, "", "")

        def wait_healthy(self, timeout):
            return 0.0

    monkeypatch.setattr(catalogue, "wait", lambda *a, **kw: True)
    assert catalogue.single_promoted(Nodes.hv) == ["redis-master"]
    r = catalogue.Run(catalogue.CATALOGUE["rolling-restart"], cluster=Nodes(), result=Result())
    catalogue._observe_rolling(r, {}, None)
    for name in NODES:
        ban = f"{name}: pcs resource ban redis-master {name} --promoted --wait=120"
        order = [ban, f"{name}: pcs cluster stop", f"{name}: pcs cluster start",
                 f"{name}: pcs resource clear redis-master {name}"]
        assert [calls.index(c) for c in order] == sorted(calls.index(c) for c in order)
    assert not [c for c in calls if "galera" in c]
    assert r.result.handed_over == [f"redis-master: away from {n}" for n in NODES]


@pytest.mark.parametrize("out, moment", [
    ("100.25\n", 100.25),  # the node's clock, within the call
    ("", 100.0),  # no reading: the call's start
    ("99.5\n", 100.0),  # a node clock behind: the call's start
    ("garbled", 100.0),
])
def test_a_kill_is_timed_by_the_node_when_its_clock_agrees(out, moment):
    assert catalogue._node_moment(out, 100.0, 100.4) == moment


def test_quorum_leaders_counts_quorum_queues_per_node():
    out = ("quorum\trabbit@overcloud-controller-1\n"
           "classic\t\n"
           "quorum\trabbit@overcloud-controller-1\n"
           "quorum\trabbit@overcloud-controller-2\n")
    names = ["overcloud-controller-0", "overcloud-controller-1", "overcloud-controller-2"]
    assert catalogue.quorum_leaders(out, names) == {
        "overcloud-controller-0": 0, "overcloud-controller-1": 2, "overcloud-controller-2": 1}


def test_a_stuck_boot_is_nova_s_gap_only_with_its_conductor_s_exception():
    line = ("2026-12-07 05:23:18.515 24585 ERROR oslo_messaging.rpc.server [None req-b ...] "
            "Exception during message handling: oslo_messaging.exceptions."
            "MessageDeliveryFailure: Unable to connect to AMQP server")

    class Logs:
        names = ["n0", "n1", "n2"]
        asked: list[str] = []

        def output(self, name, command, timeout=30):
            self.asked.append(command)
            conductor = command.endswith(catalogue.NOVA_CONDUCTOR_LOG)
            return line + "\n" if conductor and name == "n1" and "req-b" in command else None

    servers = {"violations": [], "lost_in_build": [
        {"id": "a", "request_id": "req-a"}, {"id": "b", "request_id": "req-b"},
        {"id": "c", "request_id": ""}]}
    catalogue._dropped_by_conductor(Logs(), servers)
    assert [b["id"] for b in servers["lost_in_build"]] == ["a", "c"] and not servers["ok"]
    (dropped,) = servers["dropped_by_conductor"]
    assert dropped["conductor"] == "n1"
    assert dropped["exception"].startswith("oslo_messaging.exceptions.MessageDeliveryFailure")
    assert {c.split()[-1] for c in Logs.asked} == {catalogue.NOVA_API_LOG,
                                                   catalogue.NOVA_CONDUCTOR_LOG, "2>/dev/null"}
    assert servers["lost_in_build"][0]["trail"] == []  # no log line names req-a
    servers = {"violations": [], "lost_in_build": [{"id": "b", "request_id": "req-b"}]}
    catalogue._dropped_by_conductor(Logs(), servers)
    assert servers["ok"] and servers["lost_in_build"] == []


def test_a_stuck_boot_held_by_a_conductor_the_fault_cut_off():
    """Partition run (rehearsal, 09:09): controller-0's conductor took the build 10 ms
    before the fault, logged a database reconnect for it and was fenced; nothing else."""
    held = ("2026-12-07 09:09:20.289 3558 ERROR oslo_db.sqlalchemy.engines [None req-d ...] "
            "Database connection was found disconnected; reconnecting")
    later = "2026-12-07 09:10:02.001 3558 INFO nova.conductor [None req-e ...] still here"

    class Logs:
        names = ["n0", "n1", "n2"]

        def output(self, name, command, timeout=30):
            if name != "n0" or not command.endswith(catalogue.NOVA_CONDUCTOR_LOG):
                return None  # no conductor logged an exception for any of them
            return {"req-d": held, "req-e": later}.get(command.split()[3], "") + "\n"

    servers = {"violations": [], "lost_in_build": [
        {"id": "d", "request_id": "req-d"}, {"id": "e", "request_id": "req-e"},
        {"id": "f", "request_id": "req-f"}]}
    back = catalogue._log_time("2026-12-07 09:09:28.993")
    catalogue._dropped_by_conductor(Logs(), servers, ["n0"], back)
    (h,) = servers["held_by_lost_conductor"]
    assert h["id"] == "d" and h["conductor"] == "n0" and "reconnecting" in h["last_line"]
    # A line after the node came back: that conductor lived on, so the build is lost.
    assert [b["id"] for b in servers["lost_in_build"]] == ["e", "f"] and not servers["ok"]
    assert servers["dropped_by_conductor"] == []
    # Without a node cut off (a graceful stop), nothing is excused.
    servers = {"violations": [], "lost_in_build": [{"id": "d", "request_id": "req-d"}]}
    catalogue._dropped_by_conductor(Logs(), servers, [], back)
    assert [b["id"] for b in servers["lost_in_build"]] == ["d"]
    assert catalogue._log_time(held) == back - 8.704


def test_a_stuck_boot_traced_by_its_cast_to_the_conductor_that_took_it():
    """Power loss: nova-api on n2 cast the boot; n0's conductor received it and lost
    power before logging anything under the request's id."""
    api = ("2026-12-07 10:49:45.640 812 DEBUG oslo_messaging._drivers.amqpdriver "
           "[None req-g 1 2 - - default default] CAST unique_id: 6b1f0c exchange 'nova' "
           "topic 'conductor' _send /usr/lib/python3/dist-packages/oslo_messaging/...")
    taken = {"n0": "2026-12-07 10:49:45.655 3301 DEBUG oslo_messaging._drivers.amqpdriver"
                   " [-] received message with unique_id: 6b1f0c __call__ ...",
             "n1": "2026-12-07 10:49:45.655 4410 DEBUG oslo_messaging._drivers.amqpdriver"
                   " [-] received message with unique_id: 6b1f0c __call__ ..."}

    class Logs:
        names = ["n0", "n1", "n2"]

        def __init__(self, taker):
            self.taker = taker

        def output(self, name, command, timeout=30):
            if command.endswith(catalogue.NOVA_API_LOG):
                return api + "\n" if name == "n2" and "req-g" in command else ""
            if name == self.taker and "'unique_id: 6b1f0c'" in command:
                return taken[name] + "\n"
            return ""

    back = catalogue._log_time("2026-12-07 10:50:30.000")
    servers = {"violations": [], "lost_in_build": [{"id": "g", "request_id": "req-g"}]}
    catalogue._dropped_by_conductor(Logs("n0"), servers, ["n0"], back)
    (h,) = servers["held_by_lost_conductor"]
    assert h["conductor"] == "n0" and "6b1f0c" in h["last_line"] and servers["ok"]
    # Taken by a conductor the fault spared: nothing excuses it.
    servers = {"violations": [], "lost_in_build": [{"id": "g", "request_id": "req-g"}]}
    catalogue._dropped_by_conductor(Logs("n1"), servers, ["n0"], back)
    assert [b["id"] for b in servers["lost_in_build"]] == ["g"] and not servers["ok"]
    assert servers["held_by_lost_conductor"] == []


def test_the_nodes_a_fault_cuts_off_are_its_abrupt_victims():
    names = ["n0", "n1", "n2"]

    def cut(name: str, victim: str) -> list[str]:
        run = SimpleNamespace(spec=catalogue.CATALOGUE[name], victim=victim,
                              cluster=SimpleNamespace(names=names))
        return catalogue._cut_off(run)

    assert cut("power-loss-dc", "n1") == ["n1"]
    assert cut("partition", "n0") == ["n0"]
    assert cut("quorum-loss", "n2") == ["n0", "n1"]  # the survivor is the victim
    assert cut("rolling-restart", "") == cut("maintenance", "n1") == []


def test_a_lost_boot_carries_its_trail_across_services_and_nodes():
    """The request's warnings and errors and each node's last line, in time order."""
    logs = {
        "n0": "/var/log/nova/nova-conductor.log:2026-12-07 10:00:01.000 1 INFO x [req-z] took\n"
              "/var/log/nova/nova-conductor.log:2026-12-07 10:00:02.000 1 DEBUG x [req-z] cast\n",
        "n2": "/var/log/placement/placement-api.log:2026-12-07 10:00:03.000 2 ERROR p [req-z] "
              "500\n/var/log/nova/nova-compute.log:2026-12-07 10:00:04.000 3 WARNING c "
              "[req-z] reverted\n/var/log/nova/nova-compute.log:2026-12-07 10:00:05.000 3 "
              "INFO c [req-z] deleted allocations\n",
    }

    class Logs:
        names = ["n0", "n1", "n2"]

        def output(self, name, command, timeout=30):
            return logs.get(name) if "req-z" in command else None

    trail = catalogue._trail(catalogue._request_lines(Logs(), "req-z"))
    assert [t.split()[:2] for t in trail] == [
        ["n0", "nova-conductor.log:"], ["n2", "placement-api.log:"],
        ["n2", "nova-compute.log:"], ["n2", "nova-compute.log:"]]
    assert "500" in trail[1] and trail[-1].endswith("deleted allocations")


def test_a_stuck_boot_whose_compute_reverted_its_task_state():
    """The compute's first save of the build failed in the database during the fault:
    the conductor answered an expected exception (DEBUG), the compute reverted the task
    state and left the server in BUILD with no host."""
    reverted = ("2026-12-07 18:08:20.100 77 INFO nova.compute.manager [None req-g ...] "
                "[instance: g] Successfully reverted task state from None on failure for "
                "instance.")
    expected = ("2026-12-07 18:08:20.090 66 DEBUG oslo_messaging.rpc.server [None req-g ...] "
                "Expected exception during message handling (DBConnectionError: Lost "
                "connection to MySQL server during query)")

    class Logs:
        names = ["n0", "n1", "n2"]

        def output(self, name, command, timeout=30):
            if "req-g" not in command or not command.endswith("2>/dev/null"):
                return None  # no conductor logged an exception for either
            return {"n2": f"{catalogue.NOVA_COMPUTE_LOG}:{reverted}\n",
                    "n1": f"{catalogue.NOVA_CONDUCTOR_LOG}:{expected}\n"}.get(name)

    servers = {"violations": [], "lost_in_build": [
        {"id": "g", "request_id": "req-g"}, {"id": "h", "request_id": "req-h"}]}
    catalogue._dropped_by_conductor(Logs(), servers)
    (g,) = servers["dropped_by_compute"]
    assert g["compute"] == "n2" and "reverted task state" in g["last_line"]
    assert "DBConnectionError" in g["exception"]
    assert [b["id"] for b in servers["lost_in_build"]] == ["h"] and not servers["ok"]
