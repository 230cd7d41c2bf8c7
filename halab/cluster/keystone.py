"""Keystone's identity API with the standard library only (no client libraries, so a
failed request is the server's answer, not a client's retry): issue and validate
tokens, read the service catalog, check that an endpoint answers."""

from __future__ import annotations

import functools
import json
import ssl
import time
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from urllib import error, request

import yaml

from halab.lab import topology

TIMEOUT = 5.0


@dataclass(frozen=True)
class Cloud:
    auth_url: str  # ends in /v3
    username: str
    password: str = field(repr=False)  # a repr in a log or an assertion must not show it
    project: str
    user_domain: str = "Default"
    project_domain: str = "Default"
    cacert: str | None = None  # the CA of an https auth_url (clouds.yaml's cacert)

    def at(self, base: str) -> Cloud:
        """The same credentials against another Keystone (http://host:port)."""
        return Cloud(f"{base}/v3", self.username, self.password, self.project,
                     self.user_domain, self.project_domain, self.cacert)


def clouds_yaml() -> Path:
    """Where the lab's playbook writes clouds.yaml (keystone_clouds_yaml)."""
    return topology.secrets_dir() / "clouds.yaml"


def load(path: str | Path | None = None, name: str = "openstack-ha-lab") -> Cloud:
    entry = yaml.safe_load(Path(path or clouds_yaml()).read_text())["clouds"][name]
    auth = entry["auth"]
    return Cloud(auth["auth_url"].rstrip("/"), auth["username"], auth["password"],
                 auth["project_name"], auth.get("user_domain_name", "Default"),
                 auth.get("project_domain_name", "Default"), entry.get("cacert"))


@functools.lru_cache(maxsize=8)
def tls(cacert: str | None) -> ssl.SSLContext:
    """Verifying client context: the system's CAs, or only `cacert` when given."""
    return ssl.create_default_context(cafile=cacert)


def _lower(headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _call(req: request.Request, timeout: float,
          cacert: str | None = None) -> tuple[int, dict, dict]:
    """(status, headers with lower-case names, JSON body); status 0 when no HTTP answer
    came back (a certificate that does not verify included). HAProxy passes header names
    in lower case."""
    status, headers, body = call_raw(req, timeout, cacert)
    try:
        return status, headers, json.loads(body) if body and status else {}
    except ValueError:
        return 0, {}, {}


def call_raw(req: request.Request, timeout: float,
             cacert: str | None = None) -> tuple[int, dict, bytes]:
    """As _call, with the body as bytes (empty for an HTTP error)."""
    try:
        with request.urlopen(req, timeout=timeout, context=tls(cacert)) as resp:
            return resp.status, _lower(resp.headers), resp.read()
    except error.HTTPError as exc:
        return exc.code, _lower(exc.headers), b""
    except (OSError, HTTPException, ValueError):
        return 0, {}, b""


def issue(cloud: Cloud, timeout: float = TIMEOUT) -> tuple[str | None, dict]:
    """POST /v3/auth/tokens with the password: (token or None, the token body)."""
    token, _, data = _issue(cloud, timeout)
    return token, data


def issue_status(cloud: Cloud, timeout: float = TIMEOUT,
                 token: str | None = None) -> tuple[str | None, int]:
    """(token or None, HTTP status; 0 when no answer came back). With `token`, a new
    token from that one (method "token": no password hash to check, which costs
    Keystone ~0.28 CPU-s a call here against ~0.015), expiring when it does."""
    new, status, _ = _issue(cloud, timeout, token)
    return new, status


def _issue(cloud: Cloud, timeout: float,
           token: str | None = None) -> tuple[str | None, int, dict]:
    identity = ({"methods": ["token"], "token": {"id": token}} if token else
                {"methods": ["password"], "password": {"user": {
                    "name": cloud.username, "password": cloud.password,
                    "domain": {"name": cloud.user_domain}}}})
    body = {"auth": {
        "identity": identity,
        "scope": {"project": {"name": cloud.project,
                              "domain": {"name": cloud.project_domain}}}}}
    req = request.Request(f"{cloud.auth_url}/auth/tokens", data=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json"}, method="POST")
    status, headers, data = _call(req, timeout, cloud.cacert)
    return (headers.get("x-subject-token") if status == 201 else None), status, data


def validate(auth_url: str, token: str, timeout: float = TIMEOUT,
             cacert: str | None = None) -> int:
    """GET /v3/auth/tokens: the token validating itself (200 when valid)."""
    req = request.Request(f"{auth_url}/auth/tokens",
                          headers={"X-Auth-Token": token, "X-Subject-Token": token})
    return _call(req, timeout, cacert)[0]


def endpoints(token_body: dict) -> list[dict]:
    """The catalog of a token body, flattened: service, type, interface, region, url."""
    return [{"service": svc.get("name"), "type": svc.get("type"),
             "interface": ep.get("interface"), "region": ep.get("region_id"),
             "url": ep.get("url")}
            for svc in token_body.get("token", {}).get("catalog", [])
            for ep in svc.get("endpoints", [])]


def answers(url: str, timeout: float = 2.0, cacert: str | None = None) -> tuple[int, float]:
    """GET url: (HTTP status or 0, milliseconds)."""
    t = time.monotonic()
    status = _call(request.Request(url), timeout, cacert)[0]
    return status, round((time.monotonic() - t) * 1000, 1)
