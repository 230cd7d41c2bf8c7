"""halab.keystone's catalog and clouds.yaml parsing, and the Tokens workload's
bookkeeping: which outcomes are failures (figures) and which are violations."""

from __future__ import annotations

from halab.cluster import keystone
from halab.failover.workloads import Tokens

CLOUD = keystone.Cloud("http://198.51.100.100:5000/v3", "admin", "pw", "admin")


def test_load_reads_the_cloud_the_playbook_writes(tmp_path):
    path = tmp_path / "clouds.yaml"
    path.write_text(
        "clouds:\n  openstack-ha-lab:\n    auth:\n"
        "      auth_url: http://198.51.100.100:5000/v3/\n      username: admin\n"
        "      password: \"s3cret\"\n      project_name: admin\n"
        "      user_domain_name: Default\n      project_domain_name: Default\n")
    cloud = keystone.load(path)
    assert cloud == keystone.Cloud("http://198.51.100.100:5000/v3", "admin", "s3cret", "admin")
    assert cloud.at("http://198.51.100.10:5000").auth_url == "http://198.51.100.10:5000/v3"


def test_endpoints_flattens_the_token_catalog():
    body = {"token": {"catalog": [{"name": "keystone", "type": "identity", "endpoints": [
        {"interface": "public", "region_id": "RegionOne", "url": "http://a:5000/v3"},
        {"interface": "internal", "region_id": "RegionOne", "url": "http://b:5000/v3"}]}]}}
    assert [(e["service"], e["interface"], e["url"]) for e in keystone.endpoints(body)] == [
        ("keystone", "public", "http://a:5000/v3"), ("keystone", "internal", "http://b:5000/v3")]
    assert keystone.endpoints({}) == []


def tokens() -> Tokens:
    return Tokens(CLOUD, {"a": "http://198.51.100.10:5000", "b": "http://198.51.100.11:5000"})


def test_failed_issues_are_counted_by_status_and_make_the_gap():
    t = tokens()
    t.started_at, t.stopped_at = 100.0, 120.0
    for when in (101.0, 102.0, 112.0):
        t.record_issue(201, when)
    t.record_issue(0)
    t.record_issue(503)
    t.record_issue(503)
    t.record_validation(200)
    t.record_validation(502)
    res = {**t.evaluate([]), **t._common()}
    assert res["issued"] == 3 and res["failed"] == 3
    assert res["failed_by_status"] == {"0": 1, "503": 2}
    assert res["validated"] == 1 and res["validation_errors"] == 1
    assert res["longest_gap_s"] == 10.0 and res["ok"] and res["violations"] == []


def test_a_refused_valid_token_or_a_cross_node_refusal_is_a_violation():
    t = tokens()
    t.record_validation(404)
    res = t.evaluate(["a->b"])
    assert res["refused"] == 1 and not res["ok"]
    assert len(res["violations"]) == 2 and "a->b" in res["violations"][1]
    assert res["cross_node_checked"] == 4


def test_one_token_in_five_is_issued_by_password_the_others_from_it(monkeypatch):
    """Keystone's bcrypt check is the workload's cost to the nodes: the loop pays it
    every fifth token, and again as soon as a password issue has failed."""
    calls = []
    answers = iter([(None, 503)] + [(f"t{n}", 201) for n in range(1, 12)])

    def issue_status(cloud, timeout, token=None):
        calls.append(token)
        return next(answers)

    monkeypatch.setattr(keystone, "issue_status", issue_status)
    monkeypatch.setattr(keystone, "validate", lambda *a: 200)
    t = tokens()
    t.workers, t.rate, t.max_duration = 1, 1000.0, 60
    monkeypatch.setattr(t, "_ticks", lambda rate: iter(range(12)))
    t._loop()
    # tick 0 fails by password, tick 1 retries by password; 5 and 10 refresh the base
    assert calls == [None, None, "t1", "t1", "t1", None, "t5", "t5", "t5", "t5", None, "t10"]
    assert t.issued == 11 and t.failed == {"503": 1}
