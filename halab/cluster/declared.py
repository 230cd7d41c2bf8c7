"""The cluster as the inventory declares it, templated by Ansible itself (filters and
all), for tests and tools that compare the live cluster with the data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import yaml

from halab.cluster.remote import CONNECTION_VARS
from halab.errors import HalabError

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "halab" / "playbooks" / "declared.yml"
NAMES = (
    "ha_networks", "ha_addresses", "ha_vips", "ha_peer_vips", "ha_node_roles", "ha_secrets_dir",
    "pacemaker_cluster_name", "pacemaker_totem", "pacemaker_properties",
    "pacemaker_resource_defaults",
    "pacemaker_op_defaults", "pacemaker_resources", "pacemaker_groups", "pacemaker_stonith",
    "pacemaker_constraints", "pacemaker_node_attributes", "haproxy_services",
    "haproxy_stats_vip", "haproxy_monitor_vips", "haproxy_monitor_port",
    "rabbitmq_policies", "rabbitmq_users", "galera_users", "ha_fencing", "firewall_services",
    # what the failover catalogue needs to reach and fault the machines
    "ha_fence_options", "ha_failover_fence", "ha_failover_allowed", *CONNECTION_VARS,
)


def templated(inventory: str | Path, names: tuple[str, ...] = NAMES) -> dict[str, dict]:
    """{host: {var: templated value}} for every controller; undefined vars are left out."""
    with tempfile.TemporaryDirectory(prefix="halab-declared-") as tmp:
        extra = json.dumps({"halab_declared_dir": tmp, "halab_names": list(names)})
        # The virtualenv's own, also when its bin/ is not on PATH (.venv/bin/halab ...).
        exe = shutil.which("ansible-playbook") or str(Path(sys.executable).with_name(
            "ansible-playbook"))
        cmd = [exe, "-i", str(inventory), str(PLAYBOOK), "-e", extra]
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env,
                              timeout=180)
        if proc.returncode != 0:
            raise HalabError(f"templating {inventory} failed:\n{proc.stdout[-2000:]}")
        return {p.stem: {k: v for k, v in json.loads(p.read_text()).items() if v != "__undefined__"}
                for p in sorted(Path(tmp).glob("*.json"))}


def vip_address(vips: list[dict], name: str) -> str:
    """The address of the VIP called `name` in an ha_vips list."""
    for v in vips:
        if v["name"] == name:
            return v["address"]
    raise HalabError(f"the inventory declares no VIP called {name!r}")


class Declared(Mapping[str, dict]):
    """The cluster as the inventory declares it, read once: each controller's templated
    variables by host name (a mapping), and the lookups every client needs: VIPs by
    name, their resource ids, addresses, service ports, role settings and secrets."""

    def __init__(self, hosts: dict[str, dict]):
        self._hosts = hosts

    @classmethod
    def load(cls, inventory: str | Path, names: tuple[str, ...] = NAMES) -> Declared:
        return cls(templated(inventory, names))

    def __getitem__(self, host: str) -> dict:
        return self._hosts[host]

    def __iter__(self) -> Iterator[str]:
        return iter(self._hosts)

    def __len__(self) -> int:
        return len(self._hosts)

    @property
    def shared(self) -> dict:
        """The variables every controller shares (VIPs, networks, services, secrets'
        location), read from the first one."""
        return next(iter(self._hosts.values()))

    def setting(self, role: str, name: str):
        """A role variable as the play sees it: the inventory's value, else the role's
        default (literal defaults only: ports, names)."""
        if name in self.shared:
            return self.shared[name]
        return yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())[name]

    def vip(self, name: str) -> str:
        """The address of the VIP called `name` in ha_vips."""
        return vip_address(self.shared["ha_vips"], name)

    def vips(self, key: str = "ha_vips") -> dict[str, str]:
        """{name: address} of ha_vips (or ha_peer_vips)."""
        return {v["name"]: v["address"] for v in self.shared.get(key) or []}

    def vip_resource(self, name: str) -> str:
        """The IPaddr2 resource of a VIP (pacemaker's data names it ip-<address>)."""
        return f"ip-{self.vip(name)}"

    def addresses(self, network: str = "internal") -> dict[str, str]:
        """{host: its address on `network`}."""
        return {h: hv["ha_addresses"][network] for h, hv in self._hosts.items()}

    def _service(self, name: str) -> dict:
        for s in self.shared["haproxy_services"]:
            if s["name"] == name:
                return s
        raise HalabError(f"haproxy_services declares no service called {name!r}")

    def port(self, service: str) -> int:
        """The port HAProxy serves `service` on, on its VIPs (haproxy_services)."""
        return int(self._service(service)["port"])

    def backend_port(self, service: str) -> int:
        """The port each node serves `service` on behind HAProxy."""
        s = self._service(service)
        return int(s.get("backend_port") or s["port"])

    @property
    def stats(self) -> tuple[str, int]:
        """Address and port of HAProxy's stats page (user admin, haproxy_stats_password)."""
        return (self.vip(self.setting("haproxy", "haproxy_stats_vip")),
                int(self.setting("haproxy", "haproxy_stats_port")))

    @property
    def secrets_dir(self) -> Path:
        return Path(self.shared["ha_secrets_dir"])

    def secret(self, name: str) -> Secret:
        """A generated secret, read from the controller-side secrets directory."""
        return read_secret(self.secrets_dir, name)


class Secret(str):
    """A secret's value: usable as the string it is, shown as its name by repr() (what
    pytest prints for a failing assertion's operands)."""

    name = "secret"

    def __repr__(self) -> str:
        return f"<secret {self.name}>"


def read_secret(directory: str | Path, name: str) -> Secret:
    """The generated secret `name` in a secrets directory."""
    value = Secret((Path(directory) / name).read_text().strip())
    value.name = name
    return value


MIN_SECRET = 8  # characters: shorter lines of a secrets file are not worth hiding


def secret_values(directory: str | Path | None) -> dict[str, str]:
    """{value: name} of every generated secret under `directory` (each line of each
    file: keys files hold several), for scrubbing and for the leak test."""
    found: dict[str, str] = {}
    if not directory or not Path(directory).is_dir():
        return found
    root = Path(directory)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix in (".yaml", ".yml", ".crt"):  # clouds.yaml repeats the admin
            continue  # password; certificates are public
        for line in path.read_text(errors="replace").splitlines():
            if len(line.strip()) >= MIN_SECRET and not line.startswith("-----"):  # PEM armour
                found[line.strip()] = str(path.relative_to(root))
    return found


def scrub(text: str, values: dict[str, str]) -> str:
    """`text` with every secret value replaced by <secret NAME>."""
    for value in sorted(values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, f"<secret {values[value]}>")
    return text
