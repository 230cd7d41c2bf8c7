"""The lab power switch's access rules, without a lab: only signed, fresh, unreplayed
requests from the lab network, for on/off/status/list of lab nodes."""

from __future__ import annotations

import json
import time

import pytest

from halab import fenced

KEY = "k" * 64
LAB_PEER = "198.51.100.10"


def signed(**req) -> tuple[bytes, str]:
    body = json.dumps({"ts": time.time(), "nonce": req.pop("nonce", "n1"), **req}).encode()
    return body, fenced.sign(KEY, body)


@pytest.fixture
def switch() -> fenced.Switch:
    return fenced.Switch(KEY)


def test_a_signed_request_passes(switch):
    body, sig = signed(action="status", node="overcloud-controller-1")
    assert switch.check(body, sig, LAB_PEER)["node"] == "overcloud-controller-1"


def test_a_wrong_key_is_refused(switch):
    body, _ = signed(action="off", node="overcloud-controller-1")
    with pytest.raises(PermissionError, match="bad signature"):
        switch.check(body, fenced.sign("other-key", body), LAB_PEER)


def test_a_tampered_body_is_refused(switch):
    body, sig = signed(action="status", node="overcloud-controller-1")
    with pytest.raises(PermissionError, match="bad signature"):
        switch.check(body.replace(b"status", b"off"), sig, LAB_PEER)


def test_a_replayed_request_is_refused(switch):
    body, sig = signed(action="off", node="overcloud-controller-1", nonce="same")
    switch.check(body, sig, LAB_PEER)
    with pytest.raises(PermissionError, match="replayed"):
        switch.check(body, sig, LAB_PEER)


def test_a_stale_request_is_refused(switch):
    body = json.dumps({"action": "off", "node": "overcloud-controller-1", "nonce": "x",
                       "ts": time.time() - 3600}).encode()
    with pytest.raises(PermissionError, match="stale"):
        switch.check(body, fenced.sign(KEY, body), LAB_PEER)


def test_requests_from_outside_the_lab_network_are_refused(switch):
    body, sig = signed(action="status", node="overcloud-controller-1")
    with pytest.raises(PermissionError, match="outside the lab network"):
        switch.check(body, sig, "198.51.100.74")  # the external network


def test_only_power_actions(switch):
    body, sig = signed(action="exec", node="overcloud-controller-1")
    with pytest.raises(ValueError, match="unknown action"):
        switch.check(body, sig, LAB_PEER)


def test_only_lab_nodes(switch):
    body, sig = signed(action="off", node="the-host")
    with pytest.raises(fenced.HalabError, match="unknown node"):
        switch.check(body, sig, LAB_PEER)
