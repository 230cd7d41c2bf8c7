"""Commands on the controllers over ssh, reached the way the inventory tells Ansible to
reach them (address, user, port, key, extra options, sudo when not root). One way in for
every cluster: the lab's nodes, Vagrant VMs and real machines."""

from __future__ import annotations

import shlex
import socket
import subprocess
from dataclasses import dataclass

from halab.lab.run import run

# Read by halab.cluster.declared with the cluster's data.
CONNECTION_VARS = ("ansible_host", "ansible_user", "ansible_port",
                   "ansible_ssh_private_key_file", "ansible_ssh_common_args",
                   "ansible_ssh_extra_args", "ansible_become")


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    user: str = "root"
    port: int = 22
    key: str = ""
    options: tuple[str, ...] = ()
    become: bool = False

    @classmethod
    def from_vars(cls, name: str, hv: dict) -> Host:
        user = str(hv.get("ansible_user") or "root")
        options = tuple(shlex.split(str(hv.get("ansible_ssh_common_args") or ""))
                        + shlex.split(str(hv.get("ansible_ssh_extra_args") or "")))
        return cls(name, str(hv.get("ansible_host") or name), user,
                   int(hv.get("ansible_port") or 22),
                   str(hv.get("ansible_ssh_private_key_file") or ""), options,
                   user != "root" and bool(hv.get("ansible_become", user != "root")))

    def ssh_command(self, connect_timeout: int = 5) -> list[str]:
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
               "-p", str(self.port), *self.options]
        if self.key:
            cmd += ["-i", self.key]
        return [*cmd, f"{self.user}@{self.address}"]

    def command(self, command: str) -> list[str]:
        """argv that runs the shell `command` on the host, as root."""
        if self.become:
            command = f"sudo -n sh -c {shlex.quote(command)}"
        return [*self.ssh_command(), command]

    def run(self, command: str, timeout: float = 60, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(self.command(command), timeout=timeout, check=check, input=input)

    def answers(self, timeout: float = 0.5) -> bool:
        """sshd accepts a connection: the machine runs (a cheap test, no login)."""
        try:
            with socket.create_connection((self.address, self.port), timeout=timeout):
                return True
        except OSError:
            return False


def hosts(declared) -> dict[str, Host]:
    """{name: Host} of every controller of a halab.cluster.declared.Declared."""
    return {name: Host.from_vars(name, hv) for name, hv in declared.items()}
