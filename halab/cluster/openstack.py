"""Nova, Glance and Placement as a user reaches them: a token from Keystone, the
endpoints from the token's catalog, requests with the standard library (keystone.py's,
so a failed request is the server's answer, not a client library's retry)."""

from __future__ import annotations

import json
import threading
from urllib import request

from halab.cluster import keystone
from halab.errors import HalabError

TIMEOUT = 10.0
# Microversion 2.37: `networks: none` boots a server with no port (there is no data plane).
COMPUTE_VERSION = "2.37"


class Session:
    """One user's token, shared by threads and issued again when refused."""

    def __init__(self, cloud: keystone.Cloud, interface: str = "public",
                 timeout: float = TIMEOUT):
        self.cloud, self.interface, self.timeout = cloud, interface, timeout
        self._token: str | None = None
        self._catalog: list[dict] = []
        self._lock = threading.Lock()

    def token(self, renew: bool = False) -> str | None:
        with self._lock:
            if renew or self._token is None:
                token, body = keystone.issue(self.cloud, self.timeout)
                if token:
                    self._token, self._catalog = token, keystone.endpoints(body)
            return self._token

    def url(self, service_type: str) -> str:
        if self.token() is None:
            raise HalabError(f"no token from {self.cloud.auth_url}")
        for ep in self._catalog:
            if ep["type"] == service_type and ep["interface"] == self.interface:
                return ep["url"].rstrip("/")
        raise HalabError(f"no {self.interface} {service_type} endpoint in the catalog")

    def call(self, method: str, service_type: str, path: str, body: dict | None = None,
             headers: dict | None = None, raw: bool = False,
             timeout: float | None = None) -> tuple[int, dict, dict | bytes]:
        """(status, headers, JSON body or bytes); status 0 when no answer came back.
        A 401 (a token expired or its cache lost) is asked again once with a new token."""
        for renew in (False, True):
            token = self.token(renew)
            if token is None:
                return 0, {}, b"" if raw else {}
            hdrs = {"X-Auth-Token": token, "Accept": "application/json", **(headers or {})}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                hdrs["Content-Type"] = "application/json"
            req = request.Request(self.url(service_type) + path, data=data, headers=hdrs,
                                  method=method)
            status, rh, payload = keystone.call_raw(req, timeout or self.timeout,
                                                    self.cloud.cacert)
            if status != 401:
                break
        if raw:
            return status, rh, payload
        try:
            return status, rh, json.loads(payload) if payload else {}
        except ValueError:
            return status, rh, {}

    def compute(self, method: str, path: str, body: dict | None = None):
        return self.call(method, "compute", path, body,
                         {"OpenStack-API-Version": f"compute {COMPUTE_VERSION}"})


def find_id(session: Session, service_type: str, path: str, key: str, name: str) -> str:
    """The id of the one item named `name` in a list answer (flavors, images)."""
    status, _, data = session.call("GET", service_type, path)
    if status != 200:
        raise HalabError(f"GET {service_type} {path}: HTTP {status or 'no answer'}")
    ids = [x["id"] for x in data.get(key, []) if x.get("name") == name]
    if len(ids) != 1:
        raise HalabError(f"{len(ids)} {key} named {name!r} (expected one)")
    return ids[0]
