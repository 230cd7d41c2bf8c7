"""Every subprocess goes through here: a timeout, and the command in every error."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from halab.errors import HalabError


def run(
    cmd: list[str],
    *,
    timeout: float = 60,
    check: bool = True,
    input: str | None = None,
    log: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run cmd; on failure raise HalabError naming the command (and the log, if any)."""
    try:
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as fh:
                fh.write(f"$ {shlex.join(cmd)}\n")
                fh.flush()
                proc = subprocess.run(
                    cmd, stdout=fh, stderr=subprocess.STDOUT, text=True,
                    timeout=timeout, input=input, env=env,
                    stdin=None if input is not None else subprocess.DEVNULL,
                )
        else:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, input=input, env=env,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
    except FileNotFoundError as exc:
        raise HalabError(f"{cmd[0]}: command not found (run `make host-deps`)") from exc
    except subprocess.TimeoutExpired as exc:
        where = f" (log: {log})" if log else ""
        raise HalabError(f"timed out after {timeout:.0f}s: {shlex.join(cmd)}{where}") from exc
    if check and proc.returncode != 0:
        if log is not None:
            detail = f"see {log}"
        else:
            detail = (proc.stderr or proc.stdout or "").strip().splitlines()
            detail = detail[-1] if detail else "no output"
        raise HalabError(f"exit {proc.returncode}: {shlex.join(cmd)}: {detail}")
    return proc
