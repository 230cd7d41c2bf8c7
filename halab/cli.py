"""`halab`: the three-node lab. This file only parses and dispatches."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from halab.errors import HalabError
from halab.lab import fenced, image, lock, nodes, ops, topology


def _cluster(inventory: str | None = None, faults: str | None = None):
    """The cluster as the failover tools see it: an inventory (the lab's by default),
    templated, with its fault backend."""
    from halab.cluster.declared import ROOT, Declared
    from halab.failover import catalogue

    return catalogue.Cluster(Declared.load(inventory or ROOT / "inventory" / "lab"), faults)


def _token(text: str) -> int | None:
    """A --token value: milliseconds, or 'default' (None) for corosync's own."""
    return None if text == "default" else int(text)


def _report_from(path: str, out: str) -> int:
    """The report of an earlier campaign's runs (its failover-<time>.jsonl), written
    again without a cluster: after a change to the report, or from a copied file."""
    from halab.failover import report, result

    try:
        results = result.load(path)
    except OSError as exc:
        raise HalabError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise HalabError(f"{path} is not a file of failover results, one JSON record "
                         f"a line ({exc})") from None
    if not results:
        raise HalabError(f"{path} holds no runs")
    for p in report.write(results, out):
        print(p)
    return 0


def _failover(args) -> int:
    from halab.failover import catalogue

    if args.list:
        print("\n".join(catalogue.CATALOGUE))
        return 0
    if args.report_from:
        if args.scenarios:
            raise HalabError("--report-from reports the runs in its file: no scenarios")
        return _report_from(args.report_from, args.out)
    names = args.scenarios or list(catalogue.REPORT_SCENARIOS)
    unknown = sorted(set(names) - set(catalogue.CATALOGUE))
    if unknown:
        raise HalabError(f"unknown scenario(s): {', '.join(unknown)} (see --list)")
    cluster = _cluster(args.inventory, args.faults)
    if cluster.faults.kind == "lab" and os.geteuid() != 0:
        raise HalabError("the lab's faults need root (namespaces and the nodes' processes)")
    # Real machines: say what will be done to which host, and do it only when asked to.
    print(catalogue.plan(cluster, names, args.runs))
    catalogue.check_allowed(cluster, args.yes)
    tokens = ([_token(t) for t in args.token] if args.token
              else [catalogue.declared_token(cluster)])
    if args.peer:
        cluster.with_peer()
    for path in catalogue.campaign(cluster, names, args.runs, tokens, args.out):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="halab", description="The openstack-ha-lab node lab.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("up", help="build the image if needed and boot every node (idempotent)")
    sub.add_parser("down", help="remove the lab: nodes, disks, mounts, namespace, links")
    st = sub.add_parser("status", help="nodes, addresses, VIPs and resources")
    st.add_argument("--json", action="store_true", help="machine-readable")
    sh = sub.add_parser("ssh", help="a shell or a command on a node")
    sh.add_argument("node")
    sh.add_argument("command", nargs=argparse.REMAINDER)
    for name, text in (
        ("kill", "power loss: the node dies at once"),
        ("stop", "clean shutdown of a node"),
        ("start", "boot a stopped or killed node"),
        ("isolate", "cut a node off every lab network (a partition)"),
    ):
        sub.add_parser(name, help=text).add_argument("node")
    sub.add_parser("heal", help="reconnect isolated nodes").add_argument("node", nargs="?")
    inv = sub.add_parser("inventory", help="print the Ansible inventory of the lab")
    inv.add_argument("--write", metavar="PATH", help="write it to PATH instead")
    sub.add_parser("image", help="build (or show) the cached node image")
    fencing = sub.add_parser("fencing", help="the host's power switch for fence_halab")
    fencing.add_argument("action", choices=["start", "stop", "status"])
    fo = sub.add_parser("failover", help="run failover scenarios and write the report")
    fo.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                    help="names from the catalogue (default: the report's set)")
    fo.add_argument("--runs", type=int, default=3, help="runs of each scenario")
    fo.add_argument("--token", action="append", default=[], metavar="MS",
                    help="corosync token timeout to test ('default' = corosync's; none "
                    "given: the inventory's); repeat")
    fo.add_argument("--out", default="reports", help="report directory")
    fo.add_argument("--list", action="store_true", help="list the catalogue")
    fo.add_argument("--report-from", metavar="FILE",
                    help="write the report of the runs in FILE (a campaign's "
                    "failover-<time>.jsonl) into --out; no cluster is touched")
    fo.add_argument("--peer", action="store_true",
                    help="also probe keepalived's ha_peer_vips (playbooks/peer-keepalived.yml)")
    fo.add_argument("--inventory", metavar="DIR",
                    help="the cluster's Ansible inventory (default: the lab's)")
    fo.add_argument("--faults", choices=["lab", "remote"],
                    help="how faults are made: the lab's own, or remote (fence devices, "
                    "nftables, ssh; the default for any inventory but the lab's)")
    fo.add_argument("--yes", action="store_true",
                    help="inject faults into the inventory's machines (remote faults)")
    so = sub.add_parser("soak", help="count corosync false positives: idle, then CPU-bound")
    so.add_argument("--token", default="default", metavar="MS",
                    help="corosync token timeout to test ('default' = corosync's)")
    so.add_argument("--idle", type=float, default=1800, metavar="S", help="idle seconds")
    so.add_argument("--busy", type=float, default=600, metavar="S",
                    help="seconds with every host CPU kept busy")
    so.add_argument("--out", default="reports", help="report directory")
    us = sub.add_parser("usage", help="memory (PSS) and CPU of each node over a window")
    us.add_argument("--seconds", type=float, default=60, help="CPU window")
    us.add_argument("--json", action="store_true")
    co = sub.add_parser("collect", help="a bundle of the cluster's records for a failure")
    co.add_argument("name", nargs="?", default="manual", help="what the bundle is for")
    co.add_argument("--minutes", type=float, default=15, help="journals of the last N minutes")
    co.add_argument("--out", default="reports/bundles", help="where bundles go")
    co.add_argument("--crm-report", action="store_true", help="add crm_report's archive")
    aw = sub.add_parser("argv-watch", help="run a command, report secrets seen in any "
                        "process's arguments meanwhile")
    aw.add_argument("--out", required=True, help="JSON report, updated as the run goes")
    aw.add_argument("command", nargs=argparse.REMAINDER, help="-- command and arguments")
    fl = sub.add_parser("failures", help="the failed tests of a pytest JUnit XML file, or "
                        "the failed tasks of an Ansible or molecule log")
    fl.add_argument("file", help="*.xml: JUnit; anything else: an Ansible log")
    daemon = sub.add_parser("fenced")  # the daemon itself, started by `fencing start`
    daemon.add_argument("action", choices=["serve"])
    args = p.parse_args(argv)

    try:
        if args.cmd == "inventory":
            text = topology.render_inventory()
            if args.write:
                with open(args.write, "w") as fh:
                    fh.write(text)
            else:
                sys.stdout.write(text)
            return 0
        if args.cmd == "argv-watch":
            from halab.cluster import argv

            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            if not command:
                raise HalabError("argv-watch needs a command after --")
            return argv.watch(command, args.out)
        if args.cmd == "failures":
            from halab.failover.report import ansible_failures, junit_failures

            read = junit_failures if args.file.endswith(".xml") else ansible_failures
            text = read(args.file)
            print(text or f"{args.file}: no failed {'test' if read is junit_failures else 'task'}")
            return 1 if text else 0
        if args.cmd == "failover":
            return _failover(args)
        if os.geteuid() != 0:
            raise HalabError("halab needs root (namespaces, mounts and systemd-nspawn)")
        if args.cmd == "ssh":
            node = topology.node(args.node)
            if not nodes.is_running(node):
                raise HalabError(f"{node.name} is not running")
            cmd = nodes.ssh_command(node, tty=not args.command and sys.stdin.isatty())
            os.execvp(cmd[0], [*cmd, *args.command])
        if args.cmd == "status":
            from halab.cluster import status

            return status.status(as_json=args.json)
        if args.cmd == "soak":
            from halab.failover import soak

            print(soak.soak(_cluster(), _token(args.token), args.idle, args.busy, args.out))
            return 0
        if args.cmd == "usage":
            from halab.lab import usage

            figures = usage.measure(args.seconds)
            if args.json:
                print(json.dumps(figures, indent=2))
            else:
                for name, v in figures["nodes"].items():
                    print(f"{name}: {v['pss_mib']} MiB PSS, {v['cpu_pct_of_host']} % of "
                          f"the host's CPUs, {v['processes']} processes")
                print(f"nodes: {figures['pss_mib']} MiB PSS, {figures['cpu_pct_of_host']} % "
                      f"over {figures['seconds']} s (host busy {figures['host_busy_pct']} %)")
            return 0
        if args.cmd == "collect":
            from halab.cluster import collect

            print(collect.bundle(args.name, time.time() - 60 * args.minutes, args.out,
                                 crm_report=args.crm_report))
            return 0
        if args.cmd == "fenced":
            fenced.serve()
            return 0
        if args.cmd == "fencing" and args.action == "status":
            pid = fenced.running_pid()
            print(f"fencing: {'running, pid ' + str(pid) if pid else 'stopped'}"
                  f" ({fenced.bind_address()}:{fenced.port()})")
            return 0 if pid else 3
        with lock.held():
            started = time.monotonic()
            if args.cmd == "up":
                ops.up()
            elif args.cmd == "down":
                ops.down()
            elif args.cmd == "image":
                print(image.ensure())
            elif args.cmd == "fencing":
                fenced.start() if args.action == "start" else fenced.stop()
            elif args.cmd == "heal":
                ops.heal(topology.node(args.node) if args.node else None)
            else:
                getattr(ops, args.cmd)(topology.node(args.node))
            print(f"halab {args.cmd}: done in {time.monotonic() - started:.1f}s")
        return 0
    except HalabError as exc:
        print(f"halab {args.cmd}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
