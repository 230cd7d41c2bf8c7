"""The failure bundle without a lab: what could not be read is said, what the caller
gave is kept, and the bundle is listed where CI prints it."""

from __future__ import annotations

import json
import time

from halab.cluster import collect


def test_a_bundle_says_what_it_could_not_read_and_keeps_the_callers_data(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("HALAB_STATE_DIR", str(tmp_path / "state"))
    out = tmp_path / "bundles"
    path = collect.bundle("test_scenario[power loss/x]", time.time() - 60, out,
                          extra={"run.json": {"victim": "overcloud-controller-1"},
                                 "failure.txt": "assert 1 == 2"})
    assert path.parent == out and path.name.startswith("test_scenario-power-loss-x-")
    index = (path / "INDEX.txt").read_text()
    for i in range(3):
        assert f"overcloud-controller-{i}: not running" in index
    assert "fenced.log" in index and "(unreadable" in (path / "fenced.log").read_text()
    assert json.loads((path / "run.json").read_text()) == {"victim": "overcloud-controller-1"}
    assert (path / "failure.txt").read_text() == "assert 1 == 2"
    assert (out / "bundles.txt").read_text() == f"test_scenario[power loss/x]: {path}\n"
