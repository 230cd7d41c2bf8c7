"""The one lock of the lab: every command that changes nodes or networks holds it."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator

from halab.lab import topology


@contextlib.contextmanager
def held(timeout: float | None = None) -> Iterator[bool]:
    """Hold the lab's lock; with a `timeout`, give up waiting after that many seconds
    and go on without it (yields whether it is held)."""
    path = topology.private_dir(topology.state_dir()) / "lock"
    with open(path, "w") as fh:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                got = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    got = False
                    break
                time.sleep(0.2)
        yield got
