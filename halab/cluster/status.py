"""`halab status`: the lab's nodes, the cluster as crm_mon shows it, the stateful
services as their clients see them (Galera, Redis, RabbitMQ, HAProxy's backends), the
catalog's endpoints, and what keeps it all from full health."""

from __future__ import annotations

import json

import yaml

from halab.cluster import crm, declared, keystone, services
from halab.errors import HalabError
from halab.lab import net, nodes, topology

# The lab's VIPs: HAProxy's stats page is on the internal API's (haproxy_stats_vip).
LAB_VIPS = declared.ROOT / "inventory" / "lab" / "group_vars" / "all" / "vips.yml"
STATS_VIP = "internal_api"


def _cluster_view() -> dict | None:
    """crm_mon's XML from the first node that answers, reduced to what a person scans."""
    for node in topology.NODES:
        if not nodes.is_running(node) or net.isolated(node):
            continue
        proc = nodes.ssh(node, ["crm_mon", "--one-shot", "--output-as=xml"],
                         timeout=20, check=False)
        if proc.returncode != 0:
            continue
        return parse_crm_mon(proc.stdout)
    return None


def _secret(name: str) -> str | None:
    """A generated secret of the lab, None before the playbook made it."""
    try:
        return declared.read_secret(topology.secrets_dir(), name)
    except FileNotFoundError:
        return None


def _services(reachable: list[topology.Node]) -> dict:
    """Each stateful service from the host, node by node where it has nodes."""
    view: dict = {}
    db, rd, stats = (_secret(n) for n in ("galera_user_halab", "redis_password",
                                          "haproxy_stats_password"))
    internal = {n.name: n.address("internal") for n in reachable}
    if db:
        view["galera"] = {n: services.galera(a, "halab", db) for n, a in internal.items()}
    if rd:
        view["redis"] = {n: services.redis_replication(a, rd) for n, a in internal.items()}
    if stats:
        vips = yaml.safe_load(LAB_VIPS.read_text())["ha_vips"]
        try:
            view["haproxy"] = services.haproxy_backends(
                declared.vip_address(vips, STATS_VIP), stats)
        except OSError as exc:
            view["haproxy_error"] = str(exc)
    for node in reachable:
        try:
            proc = nodes.ssh(node, ["rabbitmqctl", "-q", "cluster_status", "--formatter",
                                    "json"], timeout=30, check=False)
            if proc.returncode == 0:
                view["rabbitmq"] = services.rabbitmq_partitions(proc.stdout)
                break
        except (ValueError, HalabError):  # bad JSON, or ssh timed out: the next node
            continue
    return view


def parse_crm_mon(text: str) -> dict:
    """What `halab status` shows of crm_mon's XML (crm.state's reading of it)."""
    st = crm.state(text)
    return {"dc": st["dc"], "quorum": st["quorum"], "nodes": st["members"],
            "resources": st["instances"], "failures": st["failures"]}


def _endpoints() -> dict | None:
    """The catalog of a token issued through the public VIP, each endpoint asked once;
    None before the playbook wrote clouds.yaml."""
    if not keystone.clouds_yaml().exists():
        return None
    cloud = keystone.load()
    token, body = keystone.issue(cloud, timeout=5)
    rows = keystone.endpoints(body) if token else []
    for row in rows:
        row["status"], row["ms"] = keystone.answers(row["url"], cacert=cloud.cacert)
    return {"auth_url": cloud.auth_url, "token_issued": bool(token), "endpoints": rows}


def _print_services(svc: dict) -> None:
    if svc.get("galera"):
        print("galera (wsrep):")
        for n, g in sorted(svc["galera"].items()):
            print(f"  {n:<24} " + (g["error"] if "error" in g else
                  f"{g['state']}, {g['cluster']}, cluster size {g['size']}"))
    if svc.get("redis"):
        print("redis (replication):")
        for n, r in sorted(svc["redis"].items()):
            print(f"  {n:<24} " + (r["error"] if "error" in r else
                  f"master, {r['replicas']} replica(s)" if r["role"] == "master" else
                  f"replica of {r['master']}, link {r['link']}"))
    if svc.get("rabbitmq"):
        rb = svc["rabbitmq"]
        print(f"rabbitmq: {len(rb['running'])} running, "
              f"partitions: {rb['partitions'] or 'none'}")
    if svc.get("haproxy"):
        print("haproxy backends (UP/all):")
        for proxy, servers in sorted(svc["haproxy"].items()):
            up = sorted(s for s, row in servers.items() if row.get("status") == "UP")
            print(f"  {proxy:<12} {len(up)}/{len(servers)}  up: {', '.join(up) or '-'}")


# `halab status` exit codes, for scripts.
HEALTHY, DEGRADED, NO_CLUSTER = 0, 2, 3


def problems(rows: list[dict], cluster: dict | None, apis: dict | None) -> list[str]:
    """What keeps the lab from full health, one line each: a node not running, a
    member offline or in standby, no quorum, a resource instance stopped or in
    transition, a failed action, a token not issued or an endpoint not answering."""
    found = [f"{r['node']} {r['state']}" for r in rows if r["state"] != "running"]
    if cluster is None:
        return found + ["no node answers crm_mon"]
    if not cluster["quorum"]:
        found.append("no quorum")
    found += [f"{n} {s}" for n, s in sorted(cluster["nodes"].items()) if s != "online"]
    for rid, roles in sorted(cluster["resources"].items()):
        for role, where in sorted(roles.items()):
            if role == "Stopped":
                found.append(f"{rid}: {len(where)} instance(s) stopped")
            elif role not in ("Started", "Promoted", "Unpromoted"):
                found.append(f"{rid}: {role.lower()} on {', '.join(sorted(where))}")
    found += [f"failed {f.get('op_key')} on {f.get('node')}" for f in cluster["failures"]]
    if apis is not None:
        if not apis["token_issued"]:
            found.append(f"no token from {apis['auth_url']}")
        found += [f"{e['service']} {e['interface']} endpoint does not answer"
                  for e in apis["endpoints"] if not e["status"]]
    return found


def status(as_json: bool = False) -> int:
    """Print the lab's state; HEALTHY, DEGRADED (see `problems`) or NO_CLUSTER."""
    rows = []
    for node in topology.NODES:
        running = nodes.is_running(node)
        state = "running" if running else "stopped"
        if running and net.isolated(node):
            state = "isolated"
        rows.append({"node": node.name, "state": state,
                     **{n.name: node.address(n.name) for n in topology.NETWORKS}})
    cluster = _cluster_view() if any(r["state"] == "running" for r in rows) else None
    apis = _endpoints() if cluster is not None else None
    reachable = [n for n, r in zip(topology.NODES, rows, strict=True) if r["state"] == "running"]
    svc = _services(reachable) if cluster is not None else {}
    issues = problems(rows, cluster, apis) + services.problems(svc)
    code = NO_CLUSTER if cluster is None else DEGRADED if issues else HEALTHY
    if as_json:
        print(json.dumps({"nodes": rows, "cluster": cluster, "services": svc, "apis": apis,
                          "problems": issues}, indent=2))
        return code
    names = [n.name for n in topology.NETWORKS]
    print(f"{'NODE':<24} {'STATE':<9} " + " ".join(f"{n.upper():<16}" for n in names))
    for r in rows:
        print(f"{r['node']:<24} {r['state']:<9} " + " ".join(f"{r[n]:<16}" for n in names))
    if cluster is None:
        print("\ncluster: no node answers")
        return code
    members = ", ".join(f"{n} ({s})" for n, s in sorted(cluster["nodes"].items()))
    print(f"\ncluster: DC {cluster['dc']}, {'quorum' if cluster['quorum'] else 'NO QUORUM'}")
    print(f"members: {members}")
    vips = {r: v for r, v in cluster["resources"].items() if r.startswith("ip-")}
    others = {r: v for r, v in cluster["resources"].items() if r not in vips}
    for title, group in (("VIPs", vips), ("resources", others)):
        if group:
            print(f"{title}:")
        for rid, roles in sorted(group.items()):
            label = rid[3:] if title == "VIPs" else rid
            where = "; ".join(f"{role} on {', '.join(sorted(ns))}"
                              for role, ns in sorted(roles.items()))
            print(f"  {label:<32} {where}")
    for f in cluster["failures"]:
        why = f.get("exitreason") or f.get("status")
        print(f"  FAILED {f.get('op_key')} on {f.get('node')}: {why}")
    _print_services(svc)
    if apis is not None:
        issued = "token issued" if apis["token_issued"] else "TOKEN ISSUE FAILED"
        print(f"API endpoints (the catalog; {issued} at {apis['auth_url']}):")
        for e in apis["endpoints"]:
            answer = f"HTTP {e['status']}" if e["status"] else "NO ANSWER"
            print(f"  {e['service']:<10} {e['interface']:<9} {e['url']:<36} "
                  f"{answer} {e['ms']} ms")
    print("\n" + ("degraded: " + "; ".join(issues) if issues else "healthy"))
    return code
