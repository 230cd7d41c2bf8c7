"""Generated secrets stay out of what the tools print and write: repr of a secret and
of a Keystone cloud, scrubbed reports and bundles."""

from __future__ import annotations

import json

from halab.cluster import declared, keystone
from halab.failover import report
from halab.failover.result import Result


def secrets_dir(tmp_path):
    d = tmp_path / "secrets"
    (d / "keys").mkdir(parents=True)
    (d / "redis_password").write_text("r3dis-pass-0123456789\n")
    (d / "keys" / "0").write_text("fernet-key-one-AAAA\nfernet-key-two-BBBB\n")
    (d / "short").write_text("abc\n")  # too short to hide: it would eat ordinary words
    (d / "clouds.yaml").write_text("password: r3dis-pass-0123456789\n")
    (d / "tls").mkdir()
    (d / "tls" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIBpublicAAAA\n")
    (d / "tls" / "ca.key").write_text(
        "-----BEGIN PRIVATE KEY-----\nMIGHprivateBBBB\n-----END PRIVATE KEY-----\n")
    return d


def test_every_line_of_every_secret_file_is_known(tmp_path):
    values = declared.secret_values(secrets_dir(tmp_path))
    # Certificates are public, PEM armour lines are everyone's: neither is hidden.
    assert values == {"r3dis-pass-0123456789": "redis_password",
                      "fernet-key-one-AAAA": "keys/0", "fernet-key-two-BBBB": "keys/0",
                      "MIGHprivateBBBB": "tls/ca.key"}
    assert declared.secret_values(tmp_path / "absent") == {}


def test_scrub_replaces_values_by_names(tmp_path):
    values = declared.secret_values(secrets_dir(tmp_path))
    text = "auth r3dis-pass-0123456789; keys fernet-key-two-BBBB"
    assert declared.scrub(text, values) == "auth <secret redis_password>; keys <secret keys/0>"


def test_a_secret_shows_its_name_in_repr_and_its_value_in_use(tmp_path):
    d = secrets_dir(tmp_path)
    value = declared.Declared({"h": {"ha_secrets_dir": str(d)}}).secret("redis_password")
    assert value == "r3dis-pass-0123456789"
    assert f"{value}" == "r3dis-pass-0123456789"
    assert "r3dis" not in repr(value) and "r3dis" not in repr([value])


def test_a_cloud_repr_hides_the_password():
    cloud = keystone.Cloud("http://x/v3", "admin", "s3cret-s3cret", "admin")
    assert "s3cret" not in repr(cloud)
    assert "s3cret" not in repr(cloud.at("http://y"))


def test_the_failover_report_is_scrubbed(tmp_path):
    d = secrets_dir(tmp_path)
    results = [Result(scenario="kill-haproxy", totem="default", run=1, victim="n",
                      violations=["redis AUTH r3dis-pass-0123456789 refused"])]
    paths = report.write(results, tmp_path / "out", secrets_dir=d)
    for path in paths:
        text = path.read_text()
        assert "r3dis-pass" not in text, path
    data = json.loads(paths[0].read_text())
    assert "<secret redis_password>" in json.dumps(data)


def test_argv_watch_finds_a_secret_in_a_command_line_and_keeps_it_out_of_its_report(
        tmp_path):
    import sys

    from halab.cluster import argv

    d = secrets_dir(tmp_path)
    out = tmp_path / "argv.json"
    rc = argv.watch([sys.executable, "-c", "import time; time.sleep(1)",
                     "--password", "r3dis-pass-0123456789"], out, secrets_dir=d)
    assert rc == 0
    text = out.read_text()
    assert "r3dis-pass" not in text
    report = json.loads(text)
    assert report["finished"] and report["samples"] > 1
    assert [leak["secret"] for leak in report["leaks"]] == ["redis_password"]
    assert "--password <secret redis_password>" in report["leaks"][0]["command"]


def test_argv_watch_reports_nothing_for_a_clean_run(tmp_path):
    import sys

    from halab.cluster import argv

    out = tmp_path / "argv.json"
    assert argv.watch([sys.executable, "-c", "import time; time.sleep(0.3)"], out,
                      secrets_dir=secrets_dir(tmp_path)) == 0
    assert json.loads(out.read_text())["leaks"] == []
