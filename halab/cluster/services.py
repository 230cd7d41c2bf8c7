"""The stateful services as their own clients see them from the host, for `halab
status` and the tests: Galera's wsrep state and Redis's replication on each node,
HAProxy's backends from its stats page, RabbitMQ's partitions from its CLI's JSON."""

from __future__ import annotations

import csv
import io
import json
from urllib import request

import pymysql
import redis

TIMEOUT = 3.0
# Proxies whose check passes on one server only (Redis: the master).
ONE_UP = ("redis",)
WSREP = ("wsrep_local_state_comment", "wsrep_cluster_status", "wsrep_cluster_size",
         "wsrep_ready")


def parse_haproxy_csv(text: str) -> dict[str, dict[str, dict]]:
    """{proxy: {server: row}} of HAProxy's CSV stats, servers only."""
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    servers: dict[str, dict[str, dict]] = {}
    for row in rows:
        if row["svname"] not in ("FRONTEND", "BACKEND"):
            servers.setdefault(row["pxname"], {})[row["svname"]] = row
    return servers


def haproxy_backends(address: str, password: str, port: int = 1993,
                     user: str = "admin") -> dict[str, dict[str, dict]]:
    """The stats page's servers by proxy: status (UP, DOWN, ...) and check status."""
    url = f"http://{address}:{port}/;csv"
    mgr = request.HTTPPasswordMgrWithDefaultRealm()
    mgr.add_password(None, url, user, password)
    with request.build_opener(request.HTTPBasicAuthHandler(mgr)).open(url, timeout=5) as r:
        return parse_haproxy_csv(r.read().decode())


def galera(address: str, user: str, password: str, port: int = 3306) -> dict:
    """The node's wsrep state (SHOW GLOBAL STATUS, no privilege needed), or its error."""
    try:
        conn = pymysql.connect(host=address, port=port, user=user, password=password,
                               connect_timeout=TIMEOUT, read_timeout=TIMEOUT)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN %s", (WSREP,))
                found = {name.lower(): value for name, value in cur.fetchall()}
        finally:
            conn.close()
    except (pymysql.err.Error, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc.args[-1] if exc.args else exc}"}
    return {"state": found.get("wsrep_local_state_comment"),
            "cluster": found.get("wsrep_cluster_status"),
            "size": int(found.get("wsrep_cluster_size") or 0),
            "ready": found.get("wsrep_ready") == "ON"}


def redis_replication(address: str, password: str, port: int = 6379) -> dict:
    """The node's role, and for a replica whether its link to the master is up."""
    client = redis.Redis(host=address, port=port, password=password,
                         socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
    try:
        info = client.info("replication")
    except redis.exceptions.RedisError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        client.close()
    if info.get("role") == "master":
        return {"role": "master", "replicas": int(info.get("connected_slaves", 0))}
    return {"role": "replica", "master": info.get("master_host"),
            "link": info.get("master_link_status")}


def rabbitmq_partitions(cluster_status_json: str) -> dict:
    """Running nodes and partitions from `rabbitmqctl cluster_status --formatter json`."""
    data = json.loads(cluster_status_json)
    return {"running": sorted(data.get("running_nodes", [])),
            "partitions": data.get("partitions") or {}}


def problems(view: dict) -> list[str]:
    """What keeps the services from full health, one line each (see status.problems)."""
    found = []
    for node, g in sorted(view.get("galera", {}).items()):
        if "error" in g:
            found.append(f"galera on {node}: {g['error']}")
        elif (g["state"], g["cluster"], g["ready"]) != ("Synced", "Primary", True):
            found.append(f"galera on {node}: {g['state']}, {g['cluster']}, "
                         f"{'ready' if g['ready'] else 'not ready'}")
    redis_view = view.get("redis", {})
    masters = sorted(n for n, r in redis_view.items() if r.get("role") == "master")
    if redis_view and len(masters) != 1:
        found.append(f"redis: {len(masters)} masters ({', '.join(masters) or 'none'})")
    for node, r in sorted(redis_view.items()):
        if "error" in r:
            found.append(f"redis on {node}: {r['error']}")
        elif r["role"] == "replica" and r.get("link") != "up":
            found.append(f"redis on {node}: replica link {r.get('link')}")
    if view.get("haproxy_error"):
        found.append(f"haproxy stats page: {view['haproxy_error']}")
    rabbit = view.get("rabbitmq") or {}
    if rabbit.get("partitions"):
        found.append(f"rabbitmq partitions: {rabbit['partitions']}")
    for proxy, servers in sorted(view.get("haproxy", {}).items()):
        up = [s for s, row in servers.items() if row.get("status") == "UP"]
        if not up:
            found.append(f"haproxy {proxy}: no server UP")
        elif proxy not in ONE_UP:
            found += [f"haproxy {proxy}/{s}: {row.get('status')}"
                      for s, row in sorted(servers.items()) if s not in up]
    return found
