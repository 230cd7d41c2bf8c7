"""The failover report on a synthetic set of runs: figures, Markdown, timeline PNGs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from halab.failover import report, result
from halab.failover.result import Result

PNG = b"\x89PNG\r\n\x1a\n"


def samples(t0: float, down: tuple[float, float], span=(-2.0, 12.0), step=0.1) -> list:
    """Probe-like samples every `step` s, failing within `down` (relative to t0)."""
    out, t = [], span[0]
    while t < span[1]:
        out.append([round(t0 + t, 3), not (down[0] <= t < down[1])])
        t += step
    return out


def run(scenario: str, totem: str, n: int, public: float | None, redis_s: float,
        gap: float, lost: int = 0, redis_lost: tuple[int, int, int] = (0, 0, 0)) -> Result:
    t0 = 1_700_000_000.0 + 1000 * n
    return Result.from_dict({
        "scenario": scenario, "totem": totem, "run": n, "victim": "overcloud-controller-0",
        "t0": t0, "detected_s": 1.0 + n / 10, "redis_promoted_s": redis_s - 1,
        "galera_write_gap_s": gap, "healthy_again_s": 60.0 + n,
        "services": {"public": {"recovered_s": public, "outages": []},
                     "redis": {"recovered_s": redis_s, "outages": []}},
        "data": {
            "bank": {"acknowledged": 100, "lost_acknowledged": lost, "indeterminate": 1,
                     "failed_but_committed": 0, "bad_reads": 0, "total_found": 1000},
            "rabbitmq": {"confirmed": 200, "lost_confirmed": 0, "duplicates": 2,
                         "unconfirmed": 3, "unconfirmed_but_delivered": 1},
            "redis": {"acknowledged": 300, "errors": 4, "lost_all_replicas": redis_lost[0],
                      "partial_replication_lost": redis_lost[1] + redis_lost[2],
                      "by_replicas": {"2": {"acknowledged": 280, "lost": redis_lost[0]},
                                      "1": {"acknowledged": 15, "lost": redis_lost[1]},
                                      "0": {"acknowledged": 5, "lost": redis_lost[2]}}},
        },
        "samples": {"public": samples(t0, (0, public or 20)), "redis": samples(t0, (0, redis_s))},
        # the cluster's records: the fence takes 2 s in run 2
        "timeline": {"token_lost": 0.5, "membership": 1.0, "fence_requested": 1.1,
                     "switch_off": 1.3, "fence_confirmed": 1.5 + (n == 2) * 2,
                     "vip_started": 2.0 + (n == 2) * 2},
        "aborts": [{"t": 1.6, "why": " by deletion of nvpair"}] * n,
        "violations": ["x"] if lost else [],
    })


RESULTS = [
    run("power-loss-public-vip-owner", "default", 1, 6.0, 9.0, 7.0),
    run("power-loss-public-vip-owner", "default", 2, 8.0, 11.0, 9.0),
    run("power-loss-public-vip-owner", "token-1000", 1, 3.0, 6.0, 5.0),
    run("power-loss-public-vip-owner", "token-1000", 2, 4.0, 7.0, 6.0, redis_lost=(0, 2, 1)),
    run("power-loss-public-vip-owner", "token-1000", 3, 3.2, 6.5, 5.5),
    run("kill-redis-master", "token-1000", 1, None, 4.0, 0.5, lost=1),
]


def group(summary, scenario, totem):
    return next(g for g in summary["groups"] if (g["scenario"], g["totem"]) == (scenario, totem))


def test_summarise_groups_runs_and_computes_timing_stats():
    s = report.summarise(RESULTS)
    assert [(g["scenario"], g["totem"], g["runs"]) for g in s["groups"]] == [
        ("kill-redis-master", "token-1000", 1),
        ("power-loss-public-vip-owner", "default", 2),
        ("power-loss-public-vip-owner", "token-1000", 3)]
    t = group(s, "power-loss-public-vip-owner", "token-1000")["timing"]
    assert (t["recovered_s:public"]["median"], t["recovered_s:public"]["min"],
            t["recovered_s:public"]["max"]) == (3.2, 3.0, 4.0)
    assert t["detected_s"]["median"] == 1.2
    assert t["galera_write_gap_s"]["max"] == 6.0
    assert t["healthy_again_s"]["values"] == [61.0, 62.0, 63.0]
    d = group(s, "power-loss-public-vip-owner", "default")["timing"]
    assert d["recovered_s:redis"]["median"] == 10.0
    k = group(s, "kill-redis-master", "token-1000")["timing"]["recovered_s:public"]
    assert (k["n"], k["missing"], k["median"]) == (0, 1, None)  # never came back


def test_summarise_sums_data_safety_figures():
    s = report.summarise(RESULTS)
    data = group(s, "power-loss-public-vip-owner", "token-1000")["data"]
    assert data["bank"] == {"runs": 3, "acknowledged": 300, "lost_acknowledged": 0,
                            "indeterminate": 3, "failed_but_committed": 0, "bad_reads": 0}
    assert data["rabbitmq"]["duplicates"] == 6
    assert data["redis"]["by_replicas"]["1"] == {"acknowledged": 45, "lost": 2}
    assert data["redis"]["partial_replication_lost"] == 3
    assert data["lost"] == 0  # partially replicated Redis writes are not counted
    kill = group(s, "kill-redis-master", "token-1000")
    assert kill["data"]["lost"] == 1 and kill["runs_with_violations"] == 1


def test_markdown_has_a_table_per_totem_and_each_goal_next_to_its_figure():
    md = report.markdown(report.summarise(RESULTS))
    assert "## totem: default" in md and "## totem: token-1000" in md
    # p50 / p95 / worst; fenced from the cluster's records
    assert "| power-loss-public-vip-owner | 3 | 1.2 / 1.3 / 1.3 | 1.5 / 3.5 / 3.5 | " \
           "3.2 / 4.0 / 4.0 |" in md
    assert "| kill-redis-master | 1 | 1.1 | 1.5 | never (1) |" in md
    lines = [line for line in md.splitlines() if line.startswith("- ")]
    public = [line for line in lines if line.startswith("- public VIP back")]
    assert "goal p50 ≤ 5 s (token-1000, power-loss*): measured p50 3.2 s, p95 4.0 s, " \
           "worst 4.0 s over 3 runs → met" in public[0]
    assert "goal p95 ≤ 7 s" in public[1] and public[1].endswith("→ met")
    galera = next(line for line in lines if line.startswith("- Galera"))
    assert "(token-1000, power-loss*)" in galera and "p95 6.0 s" in galera
    # not met: the slowest step of the cluster's recovery is named
    beyond = next(line for line in lines if "detection + 4 s" in line)
    assert "(default, power-loss*)" in beyond and "NOT met" in beyond
    # it ends at the slowest service, which answered 7 s after the cluster's last phase
    assert "slowest step: VIP started → the last service answering, median 7.0 s " \
           "(power-loss-public-vip-owner, default)" in beyond
    lost = next(line for line in lines if line.startswith("- lost acknowledged writes"))
    assert "measured 1 (bank 1 of 600, rabbitmq 0 of 1200, redis 0 of 1680" in lost
    assert "lost: 3) → NOT met" in lost


def test_markdown_says_when_a_goal_was_not_measured():
    md = report.markdown(report.summarise(RESULTS[-1:]))
    assert "public VIP back after a node's power loss: goal p50 ≤ 5 s (token-1000, " \
           "power-loss*): not measured" in md


def test_runs_of_equal_samples_become_bars():
    up, down = report._runs([[0.0, True], [0.1, True], [0.2, False], [0.3, False], [0.4, True]])
    assert [(round(a, 2), round(w, 2)) for a, w in up] == [(0.0, 0.2), (0.4, 0.1)]
    assert [(round(a, 2), round(w, 2)) for a, w in down] == [(0.2, 0.2)]


def test_timeline_png_is_written(tmp_path):
    path = report.timeline_png(RESULTS[0], tmp_path / "t.png")
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000


def test_write_produces_json_markdown_and_one_png_per_power_loss_scenario(tmp_path):
    paths = report.write(RESULTS, tmp_path / "out")
    names = [p.name for p in paths]
    assert names[0].startswith("failover-") and names[0].endswith(".json")
    assert names[1].endswith(".md")
    pngs = paths[2:]
    assert len(pngs) == 2  # first run of power-loss-public-vip-owner per totem
    assert all(p.read_bytes().startswith(PNG) for p in pngs)
    assert any("default-run1" in p.name for p in pngs)
    saved = json.loads(paths[0].read_text())
    assert len(saved["results"]) == len(RESULTS) and len(saved["summary"]["groups"]) == 3
    assert f"]({pngs[0].name})" in paths[1].read_text()


def test_the_lost_writes_goal_is_not_measured_without_workloads():
    bare = [replace(RESULTS[0], data={})]
    md = report.markdown(report.summarise(bare))
    assert "- lost acknowledged writes: goal 0: not measured" in md


def test_a_missing_figure_is_not_measured_but_a_missing_recovery_is_never():
    r = replace(RESULTS[2], detected_s=None, galera_write_gap_s=None, timeline={},
                services={"public": {"recovered_s": None, "outages": []}})
    md = report.markdown(report.summarise([r]))
    assert "| power-loss-public-vip-owner | 1 | n/a (1) | n/a (1) | never (1) |" in md
    assert "Galera write gap after a node's power loss: goal p95 ≤ 7 s " \
           "(token-1000, power-loss*): not measured" in md


def test_junit_failures_names_each_failed_test(tmp_path):
    xml = tmp_path / "verify.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="test_a" name="test_ok"/>'
        '<testcase classname="test_b" name="test_bad[x]">'
        '<failure message="AssertionError: 2 lost">trace line\n\nmore</failure></testcase>'
        '<testcase classname="test_c" name="test_err"><error message="boom"/></testcase>'
        # The lab's conftest scrubs secrets by replacing the report: no message is left.
        '<testcase classname="test_d" name="test_scrubbed">'
        '<failure message="lab = &lt;Cluster&gt;&#10;scenario = \'x\'">lab = &lt;Cluster&gt;\n'
        "    def test_scrubbed(lab):\n&gt;       assert not v, v\n"
        "E       AssertionError: ['boot 7 stuck in BUILD']\nE       assert not ['boot...']\n"
        "\ntests/infra/test_d.py:76: AssertionError</failure></testcase>"
        "</testsuite></testsuites>")
    text = report.junit_failures(xml)
    assert "FAILURE: test_b::test_bad[x]\n  AssertionError: 2 lost\n" in text
    assert "trace line" not in text
    assert "ERROR: test_c::test_err\n  boom" in text
    assert ("FAILURE: test_d::test_scrubbed\n  AssertionError: ['boot 7 stuck in BUILD']\n"
            "  assert not ['boot...']\n  tests/infra/test_d.py:76: AssertionError") in text
    assert "lab = " not in text
    assert "test_ok" not in text
    xml.write_text('<testsuites><testsuite><testcase classname="a" name="b"/></testsuite>'
                   "</testsuites>")
    assert report.junit_failures(xml) == ""


def test_ansible_failures_name_the_failed_task_from_a_molecule_log(tmp_path):
    log = tmp_path / "molecule.log"
    box = "  \x1b[2m\x1b[33m│\x1b[0m "
    log.write_text("\n".join(box + line for line in [
        "TASK [firewall : Load the rules] ***",
        "ok: [overcloud-controller-1]",
        "\x1b[31mfatal: [overcloud-controller-0]: FAILED! => changed=false\x1b[0m",
        "  msg: nft exited 1",
        "  rc: 1",
        "",
        "TASK [base : Probe] ***",
        "fatal: [overcloud-controller-2]: FAILED! => changed=false",
        "...ignoring",
        "PLAY RECAP ***",
        "ERROR! the role 'nope' was not found",
    ]))
    text = report.ansible_failures(log)
    assert text.splitlines() == [
        "FAILED TASK [firewall : Load the rules]",
        "  fatal: [overcloud-controller-0]: FAILED! => changed=false",
        "    msg: nft exited 1",
        "    rc: 1",
        "ERROR! the role 'nope' was not found",
    ]
    log.write_text("TASK [a] ***\nok: [n]\n")
    assert report.ansible_failures(log) == ""


def test_the_phases_of_the_recovery_get_a_table():
    md = report.markdown(report.summarise(RESULTS))
    assert "Where the time goes" in md
    head = next(line for line in md.splitlines() if line.startswith("| scenario | corosync"))
    assert "fencing requested | fence switch: node off | fencing confirmed | VIP started" in head
    row = next(line for line in md.splitlines()
               if line.startswith("| power-loss-public-vip-owner | 0.5 / 0.5"))
    assert "| 2.5 / 3.5 | 3.0 / 4.0 | 1.5 / 2 |" in row  # confirmed, VIP, aborts


def test_the_lost_nodes_return_is_its_own_figure():
    r = replace(RESULTS[0], services={
        "public": {"recovered_s": 3.0, "return_outage_s": 2.5, "outages": []},
        "redis": {"recovered_s": 4.0, "return_outage_s": 0.0, "outages": []}})
    figures = report.derived(r)
    assert figures["worst_service_s"] == 4.0 and figures["worst_return_outage_s"] == 2.5
    assert figures["beyond_detection_s"] == round(4.0 - r.detected_s, 3)
    line = next(line for line in report.markdown(report.summarise([r])).splitlines()
                if "node's return" in line and line.startswith("- "))
    assert "worst 2.5 s over 1 runs → NOT met" in line


def test_each_phase_gets_median_and_worst_over_the_runs_that_recorded_it():
    runs = [{"membership": 4.0, "fence_confirmed": 5.0}, {"membership": 4.4},
            {"membership": 3.9, "fence_confirmed": 9.0}]
    ph = report.phase_stats([Result(timeline=r) for r in runs])
    assert set(ph) == {"membership", "fence_confirmed"}
    assert (ph["membership"]["n"], ph["membership"]["median"], ph["membership"]["max"]) \
        == (3, 4.0, 4.4)
    assert (ph["fence_confirmed"]["n"], ph["fence_confirmed"]["median"],
            ph["fence_confirmed"]["max"]) == (2, 7.0, 9.0)


def test_the_keepalived_peer_gets_its_figures_and_the_ratio():
    runs = []
    for n, (pcmk, vrrp) in enumerate(((5.0, 4.0), (6.0, 3.0), (4.5, 4.5)), start=1):
        r = run("power-loss-public-vip-owner", "token-1000", n, pcmk, 7.0, 5.0)
        r.peer = {"peer": {"pacemaker_vip_back_s": pcmk, "keepalived_vip_back_s": vrrp,
                              "ratio": round(pcmk / vrrp, 2)}}
        runs.append(r)
    summary = report.summarise(runs + [RESULTS[-1]])
    t = group(summary, "power-loss-public-vip-owner", "token-1000")["timing"]
    assert t["peer_ratio"]["values"] == [1.25, 2.0, 1.0]
    assert t["keepalived_vip_back_s"]["median"] == 4.0
    md = report.markdown(summary)
    assert "Side by side with keepalived" in md
    peer = md.split("Side by side")[1]
    row = next(line for line in peer.splitlines()
               if line.startswith("| power-loss-public-vip-owner | 3 | "))
    assert row.endswith("| 5.0 / 6.0 / 6.0 | 4.0 / 4.5 / 4.5 | 1.2 / 2.0 / 2.0 |")
    assert "| kill-redis-master | " not in md.split("Side by side")[1].split("\n\n")[1]


def test_no_peer_table_without_the_peer():
    assert "keepalived" not in report.markdown(report.summarise(RESULTS))


def test_a_report_is_rebuilt_from_the_runs_json_lines(tmp_path):
    lines = tmp_path / "failover.jsonl"
    lines.write_text("".join(r.to_json() + "\n" for r in RESULTS))
    assert result.load(lines) == RESULTS
    assert report.summarise(result.load(lines)) == report.summarise(RESULTS)


def test_halab_failover_report_from_rebuilds_the_report_without_a_cluster(
        tmp_path, monkeypatch, capsys):
    from halab import cli

    monkeypatch.setattr(cli, "_cluster", lambda *a: pytest.fail("a cluster was loaded"))
    lines = tmp_path / "failover-20260101-120000.jsonl"
    lines.write_text("".join(r.to_json() + "\n" for r in RESULTS[2:]))
    out = tmp_path / "out"
    assert cli.main(["failover", "--report-from", str(lines), "--out", str(out)]) == 0
    paths = [Path(p) for p in capsys.readouterr().out.split()]
    assert sorted(paths) == sorted(out.iterdir())
    js, md, png = paths
    assert [r["run"] for r in json.loads(js.read_text())["results"]] == [1, 2, 3, 1]
    assert "| kill-redis-master | 1 |" in md.read_text()
    assert "power-loss-public-vip-owner-token-1000-run1" in png.name
    assert png.read_bytes().startswith(PNG)


@pytest.mark.parametrize(("name", "content", "error"), [
    ("missing.jsonl", None, "cannot read {path}: No such file or directory"),
    ("failover.json", '{\n "summary": {}\n}\n', "{path} is not a file of failover results"),
    ("empty.jsonl", "\n", "{path} holds no runs"),
])
def test_report_from_refuses_a_file_without_runs_in_one_line(tmp_path, capsys, name,
                                                              content, error):
    from halab import cli

    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert cli.main(["failover", "--report-from", str(path), "--out",
                     str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"halab failover: error: {error.format(path=path)}")
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_a_record_leaves_out_what_was_not_measured_and_reads_back_tolerantly():
    record = RESULTS[0].as_dict(samples=False)
    assert "samples" not in record and "fenced_s" not in record and "aborts" in record
    assert record["detected_s"] == RESULTS[0].detected_s
    old = Result.from_dict({"scenario": "kill-haproxy", "detected_s": 1.5, "fenced_s": None,
                            "retired_figure_s": 3})
    assert (old.scenario, old.detected_s, old.fenced_s, old.services) == \
        ("kill-haproxy", 1.5, None, {})


def test_a_figure_late_after_the_clusters_last_phase_names_the_service_as_the_step():
    """The public VIP answered 4 s after the VIP started (median over runs): that
    step, not one of the cluster's, is where the time went."""
    goal = report.Goal("public VIP back", "recovered_s:public", 5.0, "median",
                       totem="default", scenario="power-loss")
    md = report.markdown(report.summarise(RESULTS), goals=[goal])
    line = next(line for line in md.splitlines() if line.startswith("- public VIP back"))
    assert line.endswith("→ NOT met; slowest step: VIP started → public answering, "
                         "median 4.0 s (power-loss-public-vip-owner, default)")


def test_the_nodes_return_names_no_step_of_the_loss():
    returned = [replace(r, services={k: {**v, "return_outage_s": 2.0}
                                     for k, v in r.services.items()}) for r in RESULTS]
    goal = report.Goal("the lost node's return: no outage over 1 s",
                       "worst_return_outage_s", 1.0)
    md = report.markdown(report.summarise(returned), goals=[goal])
    line = next(line for line in md.splitlines() if line.startswith("- the lost node"))
    assert line.endswith("worst 2.0 s over 2 runs → NOT met")


def test_an_outage_is_as_long_as_it_lasted_not_as_late_as_it_ended():
    """A rolling restart's services blip when each node stops: the last blip ends
    190 s after the start, the longest lasted 19.9 s. 'Out over 20 s' reads the latter;
    an outage that never ended has no length."""
    t0 = 1_700_000_000.0
    blips = {"mysql": {"recovered_s": 190.7, "outages": [[t0 + 2.8, t0 + 4.1],
                                                         [t0 + 190.3, t0 + 190.7]]},
             "redis": {"recovered_s": 104.9, "outages": [[t0 + 4.3, t0 + 24.2],
                                                         [t0 + 85.2, t0 + 104.9]]}}
    d = report.derived(Result(scenario="rolling-restart", t0=t0, services=blips))
    assert (d["worst_service_s"], d["longest_outage_s"]) == (190.7, 19.9)
    blips["redis"]["outages"].append([t0 + 200.0, None])
    assert report.derived(Result(t0=t0, services=blips))["longest_outage_s"] is None
    assert report.derived(Result(t0=t0, services={"public": {
        "recovered_s": 0.0, "outages": []}}))["longest_outage_s"] == 0.0


def test_beyond_detection_names_a_step_on_the_way_to_the_last_service():
    """'Every service back within detection + 4 s' ends at the slowest service: a
    phase after it (a backend of the returning node up a minute later) is no step."""
    late = [replace(r, timeline={**r.timeline, "backend_up": 39.0}) for r in RESULTS]
    goal = report.Goal("every service back within detection + 4 s", "beyond_detection_s",
                       0.5, "p95", totem="default", scenario="power-loss")
    md = report.markdown(report.summarise(late), goals=[goal])
    line = next(line for line in md.splitlines() if line.startswith("- every service"))
    assert "→ NOT met; slowest step: " in line
    assert "HAProxy backend up" not in line and "the last service answering" in line
