"""The soak's CPU hog: bounded by itself, one process per CPU asked."""

import time

from halab.failover import soak


def test_the_hog_keeps_cpus_busy_and_ends_by_itself():
    started = time.monotonic()
    procs = soak.hog(1.0, cpus=2)
    assert len(procs) == 2
    for p in procs:
        assert p.wait(timeout=30) == 0
    assert time.monotonic() - started >= 1.0


def test_the_soak_counts_corosync_losses_and_near_misses():
    from halab.failover import timeline

    lines = [
        "A processor failed, forming new configuration: token timed out (1000ms)",
        "A new membership (1.2a) was formed. Members left: 3",
        "Token has not been received in 750 ms",
        "A new membership (1.2b) was formed. Members joined: 3",
    ]
    kinds = [timeline.match("corosync", m, 0.0).kind if timeline.match("corosync", m, 0.0)
             else None for m in lines]
    assert kinds == ["token_lost", "membership", "token_late", None]
    assert set(soak.COUNTED) == {"token_lost", "membership", "token_late"}
