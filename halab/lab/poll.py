"""The one poller: the lab, the cluster checks, the failover scenarios and the tests
all wait on a condition through `until`, never on a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

PROGRESS_EVERY = 15.0  # seconds between "still waiting" lines


def until(condition: Callable, timeout: float, what: str | Callable[[], str] = "condition",
          interval: float = 0.3, error: type[Exception] | None = None,
          progress: bool = False):
    """Poll `condition()` every `interval` s until it is truthy and return its value.
    At the deadline: raise `error` naming `what` (a text, or a callable giving one,
    evaluated only then) and the last value, or with `error=None` return that falsy
    value. `progress` prints what it waits for every PROGRESS_EVERY seconds."""
    def describe() -> str:
        return what() if callable(what) else what

    start = time.monotonic()
    deadline, say = start + timeout, start + PROGRESS_EVERY
    while True:
        last = condition()
        if last:
            return last
        now = time.monotonic()
        if now >= deadline:
            if error is None:
                return last
            raise error(f"timed out after {timeout:.0f}s waiting for {describe()} "
                        f"(last: {last!r})")
        if progress and now >= say:
            print(f"  ... {now - start:.0f}s waiting for {describe()}", flush=True)
            say = now + PROGRESS_EVERY
        time.sleep(interval)
