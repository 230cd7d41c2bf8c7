"""The failover report: scenario runs (halab.failover.result) summarised per scenario
and totem setting, written as JSON, Markdown and one availability timeline (PNG) per
power-loss scenario. Goals are reported next to the figures, never asserted."""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no global backend or state

from halab.failover import timeline
from halab.failover.result import Result

# A run's own timings (Result fields) with stats per group.
TIMINGS = ("detected_s", "fenced_s", "redis_promoted_s", "galera_write_gap_s",
           "keystone_gap_s", "boot_gap_s", "image_gap_s", "healthy_again_s")
# Figures of a whole run, derived from its services (see `derived`).
DERIVED = ("worst_service_s", "beyond_detection_s", "worst_return_outage_s",
           "longest_outage_s")
# The keepalived peer's VIP against Pacemaker's public VIP in the same run (see
# catalogue._peer): first answer again after the fault, and Pacemaker/keepalived.
PEER = ("pacemaker_vip_back_s", "keepalived_vip_back_s", "peer_ratio")
# Data-safety counts summed over runs, per workload (halab.workloads verify() keys).
SAFETY = {
    "bank": ("acknowledged", "lost_acknowledged", "indeterminate", "failed_but_committed",
             "bad_reads"),
    "rabbitmq": ("confirmed", "lost_confirmed", "duplicates", "unconfirmed",
                 "unconfirmed_but_delivered"),
    "redis": ("acknowledged", "errors", "lost_all_replicas", "partial_replication_lost",
              "by_replicas"),
    # failed: token requests answered with an error or not at all (not data loss)
    "keystone": ("issued", "failed", "refused", "validation_errors"),
    # refused: creates the API did not accept; error: accepted, ended in ERROR
    "servers": ("accepted", "active", "error", "refused", "stuck"),
    "images": ("reads", "failed", "corrupt"),
}
# What "lost acknowledged writes" counts: a bank COMMIT that returned, a confirmed
# message, a Redis write WAIT reported on every replica (Redis replicates
# asynchronously: writes fewer replicas had are reported, not counted here).
LOST = (("bank", "lost_acknowledged"), ("rabbitmq", "lost_confirmed"),
        ("redis", "lost_all_replicas"))


@dataclass(frozen=True)
class Goal:
    text: str
    metric: str  # a timing key ("recovered_s:public", "galera_write_gap_s") or "lost"
    limit: float
    stat: str = "max"  # median | p95 | max, over the matching runs
    totem: str | None = None  # only runs with this totem setting (else one line per totem)
    scenario: str | None = None  # only scenarios starting with this


GOALS = (
    Goal("public VIP back after a node's power loss", "recovered_s:public", 5.0, "median",
         totem="token-1000", scenario="power-loss"),
    Goal("public VIP back after a node's power loss", "recovered_s:public", 7.0, "p95",
         totem="token-1000", scenario="power-loss"),
    Goal("Redis writable after a node's power loss", "recovered_s:redis", 7.0, "median",
         totem="token-1000", scenario="power-loss"),
    Goal("Redis writable after a node's power loss", "recovered_s:redis", 10.0, "p95",
         totem="token-1000", scenario="power-loss"),
    Goal("Galera write gap after a node's power loss", "galera_write_gap_s", 7.0, "p95",
         totem="token-1000", scenario="power-loss"),
    Goal("Keystone token gap after a node's power loss", "keystone_gap_s", 8.0, "p95",
         totem="token-1000", scenario="power-loss"),
    Goal("every service back within detection + 4 s", "beyond_detection_s", 4.0, "p95",
         totem="default", scenario="power-loss"),
    Goal("no service out over 20 s in any run", "longest_outage_s", 20.0),
    Goal("the lost node's return: no outage over 1 s", "worst_return_outage_s", 1.0),
    Goal("kill -9 of the Redis master: Redis writable", "recovered_s:redis", 10.0, "p95",
         scenario="kill-redis-master"),
    Goal("lost acknowledged writes", "lost", 0),
)


# ---------------------------------------------------------------- summary


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the runs at or below it
    (p95 of ten runs is the worst; of twenty, the second worst)."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q * len(ranked)) - 1)]


def stats(values: list[float | None]) -> dict:
    """median (p50), p95, min and max (worst) of the measured values; `missing` counts
    runs without one (for a recovery: never recovered while observed)."""
    got = [v for v in values if v is not None]
    return {"n": len(got), "missing": len(values) - len(got), "values": got,
            "median": statistics.median(got) if got else None,
            "p95": percentile(got, 0.95) if got else None,
            "min": min(got) if got else None, "max": max(got) if got else None}


def _add(total: dict, key: str, value) -> None:
    """Sum ints, and dicts of ints key by key (Redis's per-class figures)."""
    if isinstance(value, dict):
        sub = total.setdefault(key, {})
        for k, v in value.items():
            _add(sub, k, v)
    elif isinstance(value, int) and not isinstance(value, bool):
        total[key] = total.get(key, 0) + value


def safety(runs: list[Result]) -> dict:
    data: dict = {}
    for r in runs:
        for workload, keys in SAFETY.items():
            figures = r.data.get(workload)
            if figures is None:
                continue
            out = data.setdefault(workload, {"runs": 0})
            out["runs"] += 1
            for k in keys:
                if k in figures:
                    _add(out, k, figures[k])
    data["lost"] = sum(data.get(w, {}).get(k, 0) for w, k in LOST)
    return data


def derived(r: Result) -> dict:
    """A run's whole-run figures: its slowest service back after the fault (None if
    one never came back), that less the cluster's detection, the worst outage the
    lost node's return caused, the longest single outage of any service (None if one
    never ended: a rolling restart's last blip is far from the fault, not long), and
    the fencing's end from the cluster's records."""
    services = r.services.values()
    backs = [s.get("recovered_s") for s in services]
    worst = None if not backs or None in backs else max(backs)
    returns = [s["return_outage_s"] for s in services if s.get("return_outage_s") is not None]
    out = {"worst_service_s": worst,
           "beyond_detection_s": (round(worst - r.detected_s, 3)
                                  if worst is not None and r.detected_s is not None
                                  else None),
           "worst_return_outage_s": max(returns) if returns else None}
    outages = [o for s in services for o in s.get("outages", [])]
    if outages and all(end is not None for _, end in outages):
        out["longest_outage_s"] = round(max(end - start for start, end in outages), 3)
    else:
        out["longest_outage_s"] = None if outages else 0.0
    fenced = r.timeline.get("fence_confirmed")
    out["fenced_s"] = fenced if fenced is not None else r.fenced_s
    peer = next(iter((r.peer or {}).values()), None)
    if peer:
        out.update(zip(PEER, (peer["pacemaker_vip_back_s"], peer["keepalived_vip_back_s"],
                              peer["ratio"]), strict=True))
    return out


def figures(r: Result) -> dict:
    """A run's timing figures by name: its own (TIMINGS) and the derived ones, which
    may replace them (the fencing as the cluster recorded it)."""
    return {**{k: getattr(r, k) for k in TIMINGS}, **derived(r)}


def phase_stats(runs: list[Result]) -> dict:
    """Per phase of the cluster's recovery that the runs' records show: its stats."""
    out = {}
    for key in timeline.PHASES:
        st = stats([r.timeline.get(key) for r in runs])
        if st["n"]:
            out[key] = st
    return out


def summarise(results: list[Result]) -> dict:
    """{"groups": [...]}: one group per (scenario, totem) with timing stats (seconds
    from the injection), the phases of the cluster's recovery and summed data-safety
    figures."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.scenario, r.totem or "default"), []).append(r)
    out = []
    for (scenario, totem), runs in sorted(groups.items()):
        figs = [figures(r) for r in runs]
        timing = {k: stats([f.get(k) for f in figs]) for k in TIMINGS + DERIVED + PEER}
        for s in sorted({s for r in runs for s in r.services}):
            timing[f"recovered_s:{s}"] = stats(
                [r.services[s].get("recovered_s") for r in runs if s in r.services])
        out.append({"scenario": scenario, "totem": totem, "runs": len(runs),
                    "runs_with_violations": sum(bool(r.violations) for r in runs),
                    "timing": timing, "data": safety(runs),
                    "phases": phase_stats(runs),
                    "aborts": stats([len(r.aborts) for r in runs if r.aborts is not None])})
    return {"groups": out}


# ---------------------------------------------------------------- markdown


def _fmt(st: dict | None, none: str = "n/a") -> str:
    """median (min–max); runs without a value as `none` (a recovery: "never")."""
    if not st or not (st["n"] or st["missing"]):
        return "–"
    if not st["n"]:
        return f"{none} ({st['missing']})"
    text = f"{st['median']:.1f}"
    if st["n"] > 1:
        text += f" / {st['p95']:.1f} / {st['max']:.1f}"
    if st["missing"]:
        text += f", {none} ×{st['missing']}"
    return text


def _data_row(g: dict) -> str:
    d = g["data"]
    bank, rmq, red = d.get("bank", {}), d.get("rabbitmq", {}), d.get("redis", {})
    ks, sv, im = d.get("keystone", {}), d.get("servers", {}), d.get("images", {})
    cls = red.get("by_replicas", {})
    redis_cls = " / ".join(f"{cls[n].get('lost', 0)} of {cls[n].get('acknowledged', 0)}"
                           for n in sorted(cls, reverse=True)) or "–"
    cells = [
        g["scenario"],
        f"{bank.get('lost_acknowledged', '–')} of {bank.get('acknowledged', '–')}",
        str(bank.get("indeterminate", "–")), str(bank.get("bad_reads", "–")),
        f"{rmq.get('lost_confirmed', '–')} of {rmq.get('confirmed', '–')}",
        str(rmq.get("duplicates", "–")), str(rmq.get("unconfirmed_but_delivered", "–")),
        redis_cls, f"{ks.get('failed', '–')} of {ks.get('issued', 0) + ks.get('failed', 0)}"
        if ks else "–", str(ks.get("refused", "–")),
        f"{sv.get('active', 0)} / {sv.get('error', 0)} / {sv.get('stuck', 0)} of "
        f"{sv.get('accepted', 0)}" if sv else "–", str(sv.get("refused", "–")),
        f"{im.get('failed', 0)} / {im.get('corrupt', 0)} of "
        f"{im.get('reads', 0) + im.get('failed', 0)}" if im else "–",
        str(g["runs_with_violations"]),
    ]
    return "| " + " | ".join(cells) + " |"


def _matching(summary: dict, goal: Goal, totem: str | None) -> list[dict]:
    return [g for g in summary["groups"]
            if (totem is None or g["totem"] == totem)
            and (goal.scenario is None or g["scenario"].startswith(goal.scenario))]


def _acknowledged(data: dict, workload: str) -> int:
    """The denominator of LOST: what the workload's clients were told was safe."""
    if workload == "redis":
        classes = data.get("by_replicas", {})
        return classes[max(classes, key=int)].get("acknowledged", 0) if classes else 0
    return data.get({"bank": "acknowledged", "rabbitmq": "confirmed"}[workload], 0)


def goal_line(summary: dict, goal: Goal, totem: str | None) -> str:
    groups = _matching(summary, goal, totem)
    where = ", ".join(x for x in (totem, goal.scenario and f"{goal.scenario}*") if x)
    head = (f"- {goal.text}: goal {goal.limit:g}" if goal.metric == "lost"
            else f"- {goal.text}: goal {STAT_NAMES[goal.stat]} ≤ {goal.limit:g} s")
    head += f" ({where})" if where else ""
    if goal.metric == "lost":
        if not any(w in g["data"] for g in groups for w, _ in LOST):
            return f"{head}: not measured"
        lost = sum(g["data"]["lost"] for g in groups)
        parts = [f"{w} {sum(g['data'].get(w, {}).get(k, 0) for g in groups)} of "
                 f"{sum(_acknowledged(g['data'].get(w, {}), w) for g in groups)}"
                 for w, k in LOST]
        partial = sum(g["data"].get("redis", {}).get("partial_replication_lost", 0)
                      for g in groups)
        verdict = "met" if lost <= goal.limit else "NOT met"
        return (f"{head}: measured {lost} ({', '.join(parts)}; Redis writes fewer "
                f"replicas had, lost: {partial}) → {verdict}")
    values, never, spared = [], 0, 0
    service = goal.metric.startswith("recovered_s:")
    for g in groups:
        st = g["timing"].get(goal.metric)
        if st:
            got = st["values"]
            if service:  # one the fault never took out (another node's loss) did not recover
                spared += got.count(0)
                got = [v for v in got if v]
            values += got
            # no recovery time: never back; no other figure: not measured
            never += (st["missing"] if service or goal.metric in (
                "worst_service_s", "longest_outage_s") else 0)
    if not values and not never:
        return f"{head}: not measured"
    if not values:
        return f"{head}: never recovered in {never} runs → NOT met"
    measured = {"median": statistics.median, "p95": lambda v: percentile(v, 0.95),
                "max": max}[goal.stat](values)
    verdict = "met" if measured <= goal.limit and not never else "NOT met"
    text = (f"{head}: measured p50 {statistics.median(values):.1f} s, p95 "
            f"{percentile(values, 0.95):.1f} s, worst {max(values):.1f} s over {len(values)} runs")
    if never:
        text += f", never recovered in {never}"
    if spared:
        text += f" (not out in {spared} more)"
    text += f" → {verdict}"
    # The cluster's phases are those of the loss: no step for an outage's length or
    # for the node's return.
    if (verdict != "met" and goal.metric not in ("worst_return_outage_s", "longest_outage_s")
            and (step := slowest_step(groups, goal.metric))):
        text += f"; slowest step: {step}"
    return text


STAT_NAMES = {"median": "p50", "p95": "p95", "max": "worst"}


# Figures counted from the fault, and what their end is called in a step: the time
# from the cluster's last phase before it to the figure is the service's own.
FIGURE_ENDS = {"galera_write_gap_s": "Galera writes again",
               "keystone_gap_s": "tokens issued again",
               "boot_gap_s": "servers boot again",
               "image_gap_s": "images read again",
               "worst_service_s": "the last service answering"}
# A figure counted from detection ends where this one, counted from the fault, does.
FROM_FAULT = {"beyond_detection_s": "worst_service_s"}


# Redis's own phases in a node loss (its promotion, HAProxy seeing the new master): no
# step on another service's way back.
REDIS_PHASES = ("promoted", "backend_up")


def _figure_end(metric: str | None) -> str | None:
    if metric and metric.startswith("recovered_s:"):
        return f"{metric.split(':', 1)[1]} answering"
    return FIGURE_ENDS.get(metric or "")


def slowest_step(groups: list[dict], metric: str | None = None) -> str | None:
    """The step with the largest median, over the groups' runs, between consecutive
    phases of the cluster's recovery: where the time goes. With a figure counted from
    the fault (`metric`), only the phases before it count, and the last of them to the
    figure itself is a step too, and so is the first, from the fault (to Pacemaker's
    notice where corosync saw no membership change: a killed process), or from the
    detection for a figure counted from it."""
    after_detection = metric in FROM_FAULT
    metric = FROM_FAULT.get(metric or "", metric)
    end = _figure_end(metric)
    # Redis's phases are a step only on Redis's own way back (or the last service's)
    skip = REDIS_PHASES if end and metric not in ("recovered_s:redis",
                                                    "worst_service_s") else ()
    best = None
    for g in groups:
        seen = [(timeline.KIND[k].label, g["phases"][k]["median"])
                for k in timeline.PHASES if k in g["phases"] and k not in skip]
        figure = (g["timing"].get(metric) or {}).get("median") if end else None
        if figure is not None:
            start = [("the fault", 0.0)]
            noticed = (g["timing"].get("detected_s") or {}).get("median")
            if "membership" not in g["phases"] and noticed is not None:
                start.append(("the failure noticed", noticed))
            seen = start + [(k, t) for k, t in seen if t <= figure] + [(end, figure)]
            if after_detection and noticed is not None:  # detection is not the excess
                seen = [("the loss detected", noticed)] + [(k, t) for k, t in seen
                                                           if t > noticed]
        for (a, ta), (b, tb) in zip(seen, seen[1:], strict=False):
            if best is None or tb - ta > best[0]:
                best = (tb - ta, a, b, g["scenario"], g["totem"])
    if best is None:
        return None
    took, a, b, scenario, totem = best
    return f"{a} → {b}, median {took:.1f} s ({scenario}, {totem})"


def phase_table(groups: list[dict]) -> list[str]:
    """Where the time goes: per scenario, each phase of the recovery as the cluster
    recorded it, median / worst seconds from the fault."""
    keys = [k for k in timeline.PHASES if any(k in g["phases"] for g in groups)]
    if not keys:
        return []
    head = ["scenario"] + [timeline.KIND[k].label for k in keys] + ["transition aborts"]
    lines = ["", "Where the time goes (the cluster's own records; median / worst s "
             "from the fault):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [g["scenario"]]
        for k in keys:
            ph = g["phases"].get(k)
            cells.append(f"{ph['median']:.1f} / {ph['max']:.1f}" if ph else "–")
        ab = g.get("aborts") or {}
        cells.append(f"{ab['median']:g} / {ab['max']:g}" if ab.get("n") else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def peer_table(groups: list[dict]) -> list[str]:
    """Pacemaker's VIP against keepalived's for the same fault in the same runs."""
    groups = [g for g in groups if g["timing"]["keepalived_vip_back_s"]["n"]]
    if not groups:
        return []
    lines = ["", "Side by side with keepalived (VRRP) holding a VIP on the same nodes, same "
             "fault, same runs; seconds until each VIP first answered again, p50 / p95 / "
             "worst. keepalived only moves an address: no fencing of the lost node, no "
             "ordering after HAProxy, no promotion of a data service.", "",
             "| scenario | runs | Pacemaker VIP back | keepalived VIP back | "
             "ratio Pacemaker/keepalived |", "|---|---|---|---|---|"]
    for g in groups:
        t = g["timing"]
        lines.append(f"| {g['scenario']} | {t['peer_ratio']['n']} | "
                     f"{_fmt(t['pacemaker_vip_back_s'])} | {_fmt(t['keepalived_vip_back_s'])}"
                     f" | {_fmt(t['peer_ratio'])} |")
    return lines


def markdown(summary: dict, goals: tuple[Goal, ...] | list[Goal] = GOALS) -> str:
    """Per totem setting: a timing table and a data-safety table; then the goals."""
    totems = sorted({g["totem"] for g in summary["groups"]})
    lines = ["# Failover report", "",
             "Seconds from the fault's injection: p50 / p95 / worst over runs "
             "(one figure: one run); \"never\": not back while observed; "
             "\"n/a\": not measured. A service is back once it answers after the last "
             "failure before the restore; the outage the lost node's return caused is "
             "its own column."]
    for totem in totems:
        groups = [g for g in summary["groups"] if g["totem"] == totem]
        services = sorted({k.split(":", 1)[1] for g in groups for k in g["timing"]
                           if k.startswith("recovered_s:")})
        head = (["scenario", "runs", "detected", "fenced"] + [f"{s} back" for s in services]
                + ["redis promoted", "galera write gap", "token issue gap", "boot gap",
                   "image read gap", "worst outage on the node's return", "healthy again"])
        lines += ["", f"## totem: {totem}", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for g in groups:
            t = g["timing"]
            cells = ([g["scenario"], str(g["runs"]), _fmt(t["detected_s"]), _fmt(t["fenced_s"])]
                     + [_fmt(t.get(f"recovered_s:{s}"), "never") for s in services]
                     + [_fmt(t[k]) for k in ("redis_promoted_s", "galera_write_gap_s",
                                             "keystone_gap_s", "boot_gap_s", "image_gap_s",
                                             "worst_return_outage_s", "healthy_again_s")])
            lines.append("| " + " | ".join(cells) + " |")
        lines += phase_table(groups)
        lines += peer_table(groups)
        head = ["scenario", "bank lost", "bank indeterminate", "bank bad reads",
                "rabbitmq lost", "rabbitmq duplicates", "rabbitmq unconfirmed delivered",
                "redis lost by WAIT replicas (high→low)", "token issues failed",
                "tokens refused", "boots ACTIVE / ERROR / stuck of accepted",
                "creates refused", "image reads failed / corrupt", "runs with violations"]
        lines += ["", "Data safety (summed over runs; lost of acknowledged):", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += [_data_row(g) for g in groups]
    lines += ["", "## Goals (reported, not asserted)", ""]
    for goal in goals:
        for totem in ([goal.totem] if goal.totem or goal.metric == "lost" else totems):
            lines.append(goal_line(summary, goal, totem))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- timeline


def _runs(samples: list[list]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(up, down) as (start, width) runs of consecutive equal samples; a sample holds
    until the next one (the last for one median interval)."""
    pts = sorted((float(t), bool(ok)) for t, ok in samples)
    if not pts:
        return [], []
    step = statistics.median([b[0] - a[0] for a, b in zip(pts, pts[1:], strict=False)] or [0.1])
    up: list[tuple[float, float]] = []
    down: list[tuple[float, float]] = []
    start, state = pts[0]
    for i, (t, ok) in enumerate(pts):
        end = pts[i + 1][0] if i + 1 < len(pts) else t + step
        nxt = pts[i + 1][1] if i + 1 < len(pts) else None
        if nxt != ok:
            (up if state else down).append((start, end - start))
            if nxt is not None:
                start, state = end, nxt
    return up, down


def timeline_png(result: Result, path: str | Path) -> Path:
    """Each service's availability across the fault, one row per service, time in
    seconds from the injection (marked), and the cluster's detection if known."""
    t0, samples = result.t0, result.samples
    names = list(samples)
    fig = Figure(figsize=(10, 1.8 + 0.5 * max(len(names), 1)), dpi=100)
    ax = fig.subplots()
    for row, name in enumerate(names):
        up, down = _runs([[t - t0, ok] for t, ok in samples[name]])
        ax.broken_barh(up, (row - 0.35, 0.7), color="#4caf50", label="up" if row == 0 else None)
        ax.broken_barh(down, (row - 0.35, 0.7), color="#e53935",
                       label="down" if row == 0 else None)
    victim = result.victim or "?"
    ax.axvline(0, color="black", linestyle="--", label=f"fault: {victim}")
    if result.detected_s is not None:
        ax.axvline(result.detected_s, color="#1e88e5", linestyle=":",
                   label="crm_mon shows it offline")
    phases = result.timeline
    colours = ("#8e24aa", "#3949ab", "#00897b", "#f4511e", "#6d4c41", "#fdd835",
               "#546e7a", "#d81b60")
    for colour, key in zip(colours, timeline.PHASES, strict=False):
        if key in phases:
            ax.axvline(phases[key], color=colour, linewidth=1.2,
                       label=f"{timeline.KIND[key].label} {phases[key]:.1f}s")
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel("seconds from the fault's injection")
    ax.set_title(f"{result.scenario or '?'} (totem {result.totem or 'default'}, "
                 f"run {result.run or '?'})")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize="small", ncols=3,
              frameon=False)  # below the axis: it would hide bars inside
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


# ---------------------------------------------------------------- files


def write(results: list[Result], directory: str | Path,
          secrets_dir: str | Path | None = None) -> list[Path]:
    """failover-<timestamp>.json (summary and raw results), .md, and a timeline PNG of
    the first run of each power-loss scenario per totem setting; the values of the
    secrets in `secrets_dir` (default: the lab's) are replaced by their names."""
    from halab.cluster import declared
    from halab.lab import topology

    hidden = declared.secret_values(secrets_dir or topology.secrets_dir())
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    summary = summarise(results)
    pngs: list[Path] = []
    drawn: set[tuple[str, str]] = set()
    for r in results:
        key = (r.scenario, r.totem or "default")
        if r.scenario.startswith("power-loss") and key not in drawn and r.samples:
            drawn.add(key)
            name = f"failover-{stamp}-{key[0]}-{key[1]}-run{r.run or 1}.png"
            pngs.append(timeline_png(r, directory / name))
    md = markdown(summary)
    if pngs:
        md += "\n## Timelines\n\n" + "".join(f"![{p.stem}]({p.name})\n" for p in pngs)
    js = directory / f"failover-{stamp}.json"
    records = [r.as_dict() for r in results]
    js.write_text(declared.scrub(json.dumps({"summary": summary, "results": records},
                                            indent=1), hidden))
    mdp = directory / f"failover-{stamp}.md"
    mdp.write_text(declared.scrub(md, hidden))
    return [js, mdp, *pngs]


def junit_failures(path: str | Path, lines: int = 3, width: int = 240) -> str:
    """The failed and erroring tests of a pytest JUnit XML file, each with why: the
    traceback's `E` lines and the place it failed, else its message (the lab's conftest
    scrubs secrets by replacing the report, whose message is then the whole traceback,
    fixture values first). CI shows only the tail of the log: lines cut at `width`."""
    import xml.etree.ElementTree as ET

    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        for bad in (*case.findall("failure"), *case.findall("error")):
            text = [ln for ln in (bad.text or "").splitlines() if ln.strip()]
            why = [ln[1:].strip() for ln in text if ln.startswith("E ")]
            where = [ln for ln in text if re.match(r"^\S+:\d+: \w", ln)][-1:]
            message = [ln for ln in (bad.get("message") or "").splitlines() if ln.strip()]
            head = why[:lines - 1] + where if why else (message or text)[:lines]
            out.append(f"{bad.tag.upper()}: {case.get('classname')}::{case.get('name')}\n  "
                       + "\n  ".join(ln if len(ln) <= width else ln[:width] + " [...]"
                                      for ln in head))
    return "\n".join(out)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FRAME = re.compile(r"^\s*│ ?")  # molecule draws its playbook output in a box
_RESULT = ("ok: [", "changed: [", "skipping: [", "included: [", "TASK [", "PLAY ",
           "RUNNING HANDLER [", "fatal: [", "failed: [")


def ansible_failures(path: str | Path, lines: int = 15) -> str:
    """The failed tasks of an Ansible (or molecule) log, each under its task's name with
    the first lines of its result, and Ansible's own ERROR! lines: what a converge that
    ended early has to say, printed where CI's tail shows it."""
    out: list[str] = []
    task, block = "", None
    for raw in Path(path).read_text(errors="replace").splitlines():
        line = _FRAME.sub("", _ANSI.sub("", raw)).rstrip()
        if block is not None:
            if line.strip() == "...ignoring":  # ignore_errors: true
                block = None
                continue
            if not line.strip() or line.startswith(_RESULT) or len(block) >= lines:
                out.append("\n  ".join(block))
                block = None
            else:
                block.append(line)
                continue
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.rstrip("* ")
        elif line.startswith(("fatal: [", "failed: [")):
            block = [f"FAILED {task}", line]
        elif line.startswith("ERROR!") or line.startswith("[ERROR]"):
            out.append(line)
    if block is not None:
        out.append("\n  ".join(block))
    return "\n".join(out)
