"""The node image: Debian 12 with systemd, sshd and python3, plus a local apt repository
of every package the roles install, so the nodes need no network. The stack's packages
are installed in it too, unconfigured and with the units their packages enabled
disabled again: three nodes unpacking and byte-compiling the same ~400 packages at
once took most of a converge's first half. The roles' install tasks then find them
present; on Vagrant and real machines they install them. Built once with mmdebstrap and
cached under /var/cache/halab/images/<key>; the key covers everything that shapes the
image, so a change rebuilds it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from halab.errors import HalabError
from halab.lab import topology
from halab.lab.run import run

SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# Installed in the image as the base system (what any Debian 12 has before Ansible runs).
BASE_PACKAGES = ("systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt", "iproute2")
# In the image's repository, and installed without recommends as the roles install them.
STACK_PACKAGES = (
    "pacemaker", "corosync", "pcs", "resource-agents", "fence-agents",
    "haproxy", "memcached",
    "mariadb-server", "mariadb-client", "galera-4", "rsync", "socat", "python3-pymysql",
    "redis-server", "rabbitmq-server",
    "keepalived",  # the failover report's peer only (playbooks/peer-keepalived.yml)
    "keystone", "python3-openstackclient",
    "nftables",
    "curl", "psmisc", "procps", "lsof", "netcat-openbsd",
)
# Downloaded without recommends (the roles install them so): nova-compute's would
# bring libvirt, qemu and libguestfs, about half a gigabyte the fake driver never uses.
OPENSTACK_PACKAGES = (
    "swift", "swift-proxy", "swift-account", "swift-container", "swift-object",
    "python3-keystonemiddleware", "python3-swiftclient",
    "placement-api", "glance-api",
    "nova-api", "nova-conductor", "nova-scheduler", "nova-compute", "nova-compute-ironic",
    "neutron-api",
)
REPO_DIR = "srv/halab-apt"  # inside the image
# Downloaded only: the failover report's keepalived peer installs and removes it.
NOT_INSTALLED = ("keepalived",)
BUILD_VERSION = 4  # bump when the hook script below changes meaning

# Runs on the host with $1 = the image root, after the base is installed.
CUSTOMIZE = r"""
set -eu
root="$1"
# The whole stack with its recommends, resolved against the finished base, so any
# install order the roles use finds every package it asks for.
chroot "$root" apt-get install -y --download-only -o APT::Install-Recommends=true {stack}
chroot "$root" apt-get install -y --download-only -o APT::Install-Recommends=false {openstack}
mkdir -p "$root/{repo}"
mv "$root"/var/cache/apt/archives/*.deb "$root/{repo}/"
(cd "$root/{repo}" && dpkg-scanpackages --multiversion . /dev/null > Packages)
rm -f "$root"/etc/apt/sources.list
rm -rf "$root"/etc/apt/sources.list.d/*
# Same file and line as the base role's lab apt source, so its first run changes nothing.
echo "deb [trusted=yes] file:/{repo} ./" > "$root/etc/apt/sources.list.d/ha-lab.list"
rm -rf "$root"/var/lib/apt/lists/*
chroot "$root" apt-get update
# Installed once here instead of on every node at converge. Nothing may start (there is
# no systemd in the chroot anyway), and units the packages enabled are disabled again:
# the roles enable what runs outside Pacemaker, as they do after their own install.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
enabled() {{
  chroot "$root" systemctl list-unit-files --state=enabled --no-legend | cut -d' ' -f1 | sort
}}
enabled > "$root/tmp/enabled.before"
chroot "$root" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends {install}
enabled | comm -13 "$root/tmp/enabled.before" - | xargs -r chroot "$root" systemctl disable
rm -f "$root/usr/sbin/policy-rc.d" "$root/tmp/enabled.before"
# Per-node identity is written at node creation: no shared host keys or machine-id.
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
printf '%s\n' '[Service]' 'ExecStartPre=' 'ExecStartPre=/usr/bin/ssh-keygen -A' \
  'ExecStartPre=/usr/sbin/sshd -t' > "$root/etc/systemd/system/ssh.service.d/halab-hostkeys.conf"
: > "$root/etc/machine-id"
rm -f "$root/etc/hostname"
: > "$root/etc/resolv.conf"
# minbase has no netbase: give the image the /etc/hosts every installed system has.
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
chroot "$root" systemctl enable systemd-networkd ssh
chroot "$root" systemctl mask console-getty.service getty@.service systemd-timesyncd.service
"""


def image_key() -> str:
    spec = {
        "suite": SUITE,
        "mirrors": _mirrors(),
        "base": BASE_PACKAGES,
        "stack": STACK_PACKAGES,
        "openstack": OPENSTACK_PACKAGES,
        "not_installed": NOT_INSTALLED,
        "hook": CUSTOMIZE,
        "version": BUILD_VERSION,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _mirrors() -> tuple[str, ...]:
    # A user behind a local mirror sets HALAB_MIRROR to "deb URL SUITE main" lines, ";"-separated.
    override = os.environ.get("HALAB_MIRROR")
    return tuple(s.strip() for s in override.split(";")) if override else MIRRORS


def image_dir() -> Path:
    return topology.cache_dir() / "images" / image_key()


def rootfs() -> Path:
    return image_dir() / "rootfs"


def is_built() -> bool:
    return (image_dir() / "complete").exists()


def ensure(progress=print) -> Path:
    """Return the cached image root, building it first if needed."""
    if is_built():
        return rootfs()
    if shutil.which("mmdebstrap") is None:
        raise HalabError("image build: mmdebstrap is not installed (run `make host-deps`)")
    final = image_dir()
    work = final.with_name(final.name + ".building")
    log = topology.cache_dir() / "images" / f"build-{image_key()}.log"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if log.exists():
        log.unlink()
    progress(f"image: building {image_key()} with mmdebstrap (a few minutes; log: {log})")
    started = time.monotonic()
    hook = CUSTOMIZE.format(
        stack=" ".join(STACK_PACKAGES), openstack=" ".join(OPENSTACK_PACKAGES), repo=REPO_DIR,
        install=" ".join(p for p in (*STACK_PACKAGES, *OPENSTACK_PACKAGES)
                         if p not in NOT_INSTALLED))
    cmd = [
        "mmdebstrap", "--variant=minbase", "--mode=root", "--skip=cleanup/apt/lists",
        "--include=" + ",".join(BASE_PACKAGES),
        "--customize-hook=" + hook,
        SUITE, str(work / "rootfs"), *_mirrors(),
    ]
    try:
        run(cmd, timeout=1800, log=log)
    except HalabError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise HalabError(f"image build failed: {exc}") from exc
    (work / "complete").write_text(f"{time.monotonic() - started:.0f}\n")
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    progress(f"image: built in {time.monotonic() - started:.0f}s")
    _prune_old(keep=final)
    return rootfs()


def _prune_old(keep: Path) -> None:
    """Old images are only disk: drop them unless a running node still uses them."""
    images = topology.cache_dir() / "images"
    in_use = {p.read_text().strip() for p in topology.state_dir().glob("nodes/*/image")}
    for d in images.iterdir():
        if d.is_dir() and d != keep and d.name not in in_use:
            shutil.rmtree(d, ignore_errors=True)
