"""The failover timeline from the cluster's own records: journal and switch-log lines as
Pacemaker 2.1.5, corosync 3.1 and HAProxy 2.6 wrote them in a power loss on the lab."""

from __future__ import annotations

import json

from halab.failover import timeline

T0 = 1_796_034_118.0  # the fault
VICTIM = "overcloud-controller-2"


def journal(*records: tuple[float, str, str]) -> str:
    return "\n".join(json.dumps({"__REALTIME_TIMESTAMP": str(int((T0 + dt) * 1e6)),
                                 "SYSLOG_IDENTIFIER": ident, "MESSAGE": msg})
                     for dt, ident, msg in records)


DC = journal(
    (3.102, "corosync", "[TOTEM ] A processor failed, forming new configuration: token timed "
                        "out (3650ms), waiting 4380ms for consensus."),
    (7.503, "corosync", "[TOTEM ] A new membership (1.16) was formed. Members left: 3"),
    (7.517, "pacemaker-controld", "notice: Node overcloud-controller-2 state is now lost"),
    (8.926, "pacemaker-schedulerd", "warning: Calculated transition 0 (with warnings), saving "
                                    "inputs in /var/lib/pacemaker/pengine/pe-warn-0.bz2"),
    (8.952, "pacemaker-controld", "notice: Requesting fencing (reboot) of node "
                                  "overcloud-controller-2"),
    (9.32, "pacemaker-controld", "notice: Peer overcloud-controller-2 was terminated (reboot) "
                                 "by overcloud-controller-0 on behalf of "
                                 "pacemaker-controld.5421@overcloud-controller-0: OK"),
    (9.898, "pacemaker-controld", "notice: Result of start operation for ip-198.51.100.51 on "
                                  "overcloud-controller-0: ok"),
    (10.5, "pacemaker-controld", "notice: Transition 0 aborted by "
                                 "status-1-master-redis doing create master-redis=1000: "
                                 "Transient attribute change"),
    (11.2, "pacemaker-controld", "notice: Result of promote operation for redis on "
                                 "overcloud-controller-0: ok"),
    (11.9, "haproxy", "[WARNING]  (455) : Server redis/overcloud-controller-0 is UP, reason: "
                      "Layer7 check passed, code: 0, info: \"(tcp-check)\", check duration: "
                      "0ms. 1 active and 0 backup servers online."),
    (17.869, "pacemaker-controld", "notice: Transition 0 (Complete=48, Pending=0, Fired=0, "
                                   "Skipped=0, Incomplete=0, Source=/var/lib/pacemaker/pengine/"
                                   "pe-warn-0.bz2): Complete"),
    # the victim's return: not part of the recovery
    (29.5, "pacemaker-controld", "notice: Node overcloud-controller-2 state is now member"),
    (40.0, "pacemaker-controld", "notice: Result of promote operation for galera on "
                                 "overcloud-controller-2: ok"),
    (42.5, "haproxy", "[WARNING]  (455) : Server redis/overcloud-controller-2 is UP, reason: "
                      "Layer7 check passed"),
    (50.0, "pacemaker-controld", "notice: an unrelated line"),
)
PEER = journal(
    (9.317, "pacemaker-controld", "notice: Peer overcloud-controller-2 was terminated (reboot) "
                                  "by overcloud-controller-0 on behalf of "
                                  "pacemaker-controld.5421@overcloud-controller-0: OK"),
    (10.073, "pacemaker-controld", "notice: Result of start operation for ip-198.51.100.100 on "
                                   "overcloud-controller-1: ok"),
)
SWITCH = ("2026-11-30 10:21:58.512 198.51.100.10 {\"action\": \"status\"} -> 200 {}\n"
          "2026-11-30 10:22:07.031 off overcloud-controller-2: no process left after 0.212s\n"
          "not a log line\n")


def events():
    def sh(name, command):
        assert "journalctl" in command and "-t pacemaker-controld" in command
        return {"overcloud-controller-0": DC, "overcloud-controller-1": PEER}.get(name)
    return timeline.collect(sh, ["overcloud-controller-0", "overcloud-controller-1", VICTIM],
                            SWITCH, T0 - 2)


def test_each_record_becomes_an_event_on_one_time_axis():
    evs = events()
    assert [e.t for e in evs] == sorted(e.t for e in evs)
    assert {e.kind for e in evs} >= {"token_lost", "membership", "node_lost", "transition",
                                     "fence_requested", "switch_off", "fence_confirmed",
                                     "vip_started", "aborted", "promoted", "backend_up",
                                     "transition_done", "node_joined"}
    switch = next(e for e in evs if e.kind == "switch_off")
    assert switch.node == VICTIM and switch.on == "host"
    assert abs(switch.t - (T0 + 9.031)) < 0.001  # 10:22:07.031 UTC is T0 + 9.031


def test_phases_are_the_first_of_each_kind_and_leave_out_the_victims_return():
    ph = timeline.phases(events(), T0, VICTIM)
    assert ph["token_lost"] == 3.102 and ph["membership"] == 7.503
    assert ph["fence_requested"] == 8.952 and ph["switch_off"] == 9.031
    assert ph["fence_confirmed"] == 9.317  # the first journal that recorded it
    assert ph["vip_started"] == 9.898
    assert ph["vip_started:ip-198.51.100.100"] == 10.073
    assert ph["promoted"] == 11.2 and ph["promoted:redis"] == 11.2
    assert "promoted:galera" not in ph  # on the victim, after it came back
    assert ph["backend_up"] == 11.9 and "backend_up:redis/overcloud-controller-2" not in ph


def test_aborts_in_the_recovery_window_say_why():
    evs = events()
    assert timeline.aborts(evs, T0, T0 + 12) == [
        {"t": 10.5, "why": "0 by status-1-master-redis doing create master-redis=1000: "
                           "Transient attribute change"}]
    assert timeline.aborts(evs, T0, T0 + 10) == []


def test_unreadable_records_are_skipped():
    text = "not json\n" + json.dumps({"MESSAGE": [1, 2], "SYSLOG_IDENTIFIER": "corosync"})
    assert timeline.parse_journal(text) == []
