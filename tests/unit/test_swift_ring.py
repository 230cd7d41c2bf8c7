"""swift_ring through Ansible on this host, with Debian's python3-swift (as on the nodes)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"
HAS_SWIFT = subprocess.run([PYTHON, "-c", "import swift.common.ring"],
                           capture_output=True).returncode == 0
pytestmark = pytest.mark.skipif(not HAS_SWIFT, reason="python3-swift is not installed")


def devices(*zones: int, weight: float = 100) -> list[dict]:
    return [{"ip": f"198.51.100.{9 + z}", "port": 6200, "device": "d1", "zone": z,
             "weight": weight} for z in zones]


def ring(tmp: Path, devs: list[dict], check: bool = False, **over) -> dict:
    args = {"name": "object", "dir": str(tmp), "part_power": 6, "replicas": 3,
            "min_part_hours": 0, "devices": devs, **over}
    cmd = ["ansible", "localhost", "-c", "local", "-i", "localhost,",
           "-e", f"ansible_python_interpreter={PYTHON}",
           "-m", "halab.ha.swift_ring", "-a", json.dumps(args)]
    if check:
        cmd.append("--check")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    out = json.loads(proc.stdout)
    return out["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_creates_then_changes_nothing(tmp_path):
    first = ring(tmp_path, devices(1, 2, 3))
    assert first["changed"], first
    assert len(first["devices"]) == 3
    ring_file = tmp_path / "object.ring.gz"
    data = ring_file.read_bytes()
    assert gzip.decompress(data)  # a real gzip'd ring
    second = ring(tmp_path, devices(1, 2, 3))
    assert not second["changed"], second["changes"]
    assert ring_file.read_bytes() == data


def test_check_mode_writes_nothing(tmp_path):
    result = ring(tmp_path, devices(1, 2, 3), check=True)
    assert result["changed"]
    assert not list(tmp_path.iterdir())


def test_adds_removes_and_reweights(tmp_path):
    ring(tmp_path, devices(1, 2, 3, 4))
    before = (tmp_path / "object.ring.gz").read_bytes()
    result = ring(tmp_path, devices(1, 2, 3))
    assert result["changed"]
    assert "removed ('198.51.100.13', 6200, 'd1')" in result["changes"]
    assert [d[3] for d in result["devices"]] == [1, 2, 3]
    assert (tmp_path / "object.ring.gz").read_bytes() != before
    result = ring(tmp_path, devices(1, 2, 3, weight=50))
    assert result["changed"]
    assert {d[4] for d in result["devices"]} == {50.0}
    assert not ring(tmp_path, devices(1, 2, 3, weight=50))["changed"]


def test_restores_a_ring_file_that_differs(tmp_path):
    ring(tmp_path, devices(1, 2, 3))
    ring_file = tmp_path / "object.ring.gz"
    good = ring_file.read_bytes()
    ring_file.write_bytes(b"stale")
    result = ring(tmp_path, devices(1, 2, 3))
    assert result["changes"] == ["ring file"]
    assert ring_file.read_bytes() == good


def test_refuses_a_new_part_power(tmp_path):
    ring(tmp_path, devices(1, 2, 3))
    result = ring(tmp_path, devices(1, 2, 3), part_power=7)
    assert result.get("failed")
    assert "migration" in result["msg"]


def test_too_few_devices_for_the_replicas_fails_cleanly(tmp_path):
    result = ring(tmp_path, devices(1, 2))
    assert result.get("failed")
    assert "Replica count of 3" in result["msg"]
    assert not (tmp_path / "object.builder").exists()
