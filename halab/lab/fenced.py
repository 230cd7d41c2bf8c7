"""The lab's power switch for fencing: a small HTTP daemon on the host's internal lab
address that powers lab nodes off and on for the fence_halab agent on the nodes.

Access is limited the way fence_xvm limits it: keys (HMAC-SHA256 over the request,
with a timestamp and a nonce against replays), requests only from the lab's internal
network, and only four actions (on, off, status, list) on lab nodes. Each node holds
its own key, derived from the switch's: a node that takes another's address (it has
CAP_NET_ADMIN for its VIPs) can neither sign requests as that node nor forge the signed
replies its agent checks. Connections are bounded in number, time and body size, and
refused by address before anything is read."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from halab.errors import HalabError
from halab.lab import lock, net, nodes, poll, topology

PORT = 1229  # fence_xvm's port
MAX_SKEW = 30  # seconds a signed request stays valid
MIN_KEY = 32  # characters
MAX_BODY = 4096  # bytes; a request is a few dozen
SOCKET_TIMEOUT = 5.0  # seconds a client may take to send its request
MAX_CONNECTIONS = 16  # at once; more are closed unanswered
# Seconds a power action waits for the CLI's lock, then acts anyway: a fence request
# must not hang behind `halab start`.
LOCK_WAIT = 20.0
# Power on, then the machine boots this much later, as a real one spends a minute or
# more in POST. Without it a node fenced by reboot rejoined before the cluster had
# recorded its fencing and stopped itself (fence-reaction=stop), or came back in the
# middle of the survivors' recovery and aborted its transition.
BOOT_DELAY = 15.0
ACTIONS = ("on", "off", "status", "list")


def key_path() -> Path:
    return topology.secrets_dir() / "fence_halab_key"


def pid_path() -> Path:
    return topology.state_dir() / "fenced.pid"


def log_path() -> Path:
    return topology.state_dir() / "fenced.log"


def node_key_path(node: topology.Node) -> Path:
    """The key the inventory installs on `node` (and only there)."""
    return key_path().parent / "fence_halab" / f"{node.name}.key"


def _write_private(path: Path, text: str) -> None:
    topology.private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")


def ensure_key() -> str:
    """The switch's key (generated once) and each node's key derived from it."""
    path = key_path()
    if not path.exists():
        _write_private(path, secrets.token_hex(32))
    key = checked_key(path.read_text().strip(), str(path))
    for node in topology.NODES:
        derived = node_key(key, node.name)
        npath = node_key_path(node)
        if not npath.exists() or npath.read_text().strip() != derived:
            _write_private(npath, derived)
    return key


def checked_key(key: str, where: str = "the key") -> str:
    if len(key) < MIN_KEY:
        raise HalabError(f"{where} has {len(key)} characters; the power switch needs at "
                         f"least {MIN_KEY} (remove it and `halab fencing start` makes one)")
    return key


def node_key(key: str, name: str) -> str:
    return hmac.new(key.encode(), f"fence_halab node {name}".encode(),
                    hashlib.sha256).hexdigest()


def sign(key: str, body: bytes) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def bind_address() -> str:
    # Tests run the switch on loopback; the lab binds the host's internal address.
    return os.environ.get("HALAB_FENCED_ADDRESS") or next(
        n.host_address for n in topology.NETWORKS if n.name == topology.MANAGEMENT)


def port() -> int:
    return int(os.environ.get("HALAB_FENCED_PORT", PORT))


def lab_network() -> ipaddress.IPv4Network:
    return ipaddress.ip_network(os.environ.get("HALAB_FENCED_CLIENTS") or next(
        n.cidr for n in topology.NETWORKS if n.name == topology.MANAGEMENT))


class Switch:
    """Validates requests and acts on nodes; one power action at a time."""

    def __init__(self, key: str, boot_delay: float = BOOT_DELAY):
        self.key = checked_key(key)
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.boot_delay = boot_delay
        self.booting: dict[str, threading.Timer] = {}  # powered on, still in "POST"
        self.node_keys = {n.ssh_address: node_key(key, n.name) for n in topology.NODES}

    def key_for(self, peer: str) -> str:
        """A node signs with its own key; any other lab address (the host's own tools)
        needs the switch's key, which no node holds."""
        return self.node_keys.get(peer, self.key)

    def admit(self, peer: str) -> None:
        """Before anything of the request is read."""
        if ipaddress.ip_address(peer) not in lab_network():
            raise PermissionError(f"request from {peer}, outside the lab network")

    def check(self, body: bytes, signature: str, peer: str) -> dict:
        self.admit(peer)
        if not hmac.compare_digest(sign(self.key_for(peer), body), signature or ""):
            raise PermissionError("bad signature")
        req = json.loads(body)
        if not isinstance(req, dict):
            raise ValueError("a request is a JSON object")
        now = time.time()
        if abs(now - float(req.get("ts", 0))) > MAX_SKEW:
            raise PermissionError("stale request")
        nonce = str(req.get("nonce", ""))
        with self.lock:
            self.seen = {n: t for n, t in self.seen.items() if now - t < 2 * MAX_SKEW}
            if not nonce or nonce in self.seen:
                raise PermissionError("replayed request")
            self.seen[nonce] = now
        if req.get("action") not in ACTIONS:
            raise ValueError(f"unknown action {req.get('action')!r}")
        if req["action"] != "list":
            topology.node(str(req.get("node", "")))  # raises for a non-lab node
        return req

    def act(self, req: dict) -> dict:
        if req["action"] == "list":
            return {"nodes": {n.name: self.power(n) for n in topology.NODES}}
        node = topology.node(req["node"])
        with self.lock:
            if req["action"] == "off" and node.name in self.booting:
                self.booting.pop(node.name).cancel()  # off during POST: it stays off
                log(f"off {node.name}: boot cancelled")
            if req["action"] == "off" and nodes.is_running(node):
                # Answer as soon as the node is dead; nspawn's exit and the unmount
                # (seconds, more under load) are the host's business, not the fence's.
                took = nodes.power_off(node)
                log(f"off {node.name}: no process left after {took:.3f}s")
                threading.Thread(target=self._teardown, args=(node,), daemon=True).start()
            elif (req["action"] == "on" and not nodes.is_running(node)
                  and node.name not in self.booting):
                timer = threading.Timer(self.boot_delay, self._boot, args=(node,))
                self.booting[node.name] = timer
                timer.start()
        return {"node": node.name, "status": self.power(node)}

    def _teardown(self, node: topology.Node) -> None:
        t = time.monotonic()
        try:
            with lock.held(timeout=LOCK_WAIT):
                nodes.teardown(node)
            log(f"teardown of {node.name} done after {time.monotonic() - t:.1f}s")
        except HalabError as exc:
            log(f"teardown of {node.name} failed: {exc}")

    def _boot(self, node: topology.Node) -> None:
        try:
            with self.lock, lock.held(timeout=LOCK_WAIT):
                if self.booting.get(node.name) is threading.current_thread() \
                        and not nodes.is_running(node):
                    nodes.start(node, wait=False)  # waits for a teardown in flight
                    log(f"on {node.name}: booting")
        except HalabError as exc:
            log(f"boot of {node.name} failed: {exc}")
        finally:
            if self.booting.get(node.name) is threading.current_thread():
                del self.booting[node.name]

    def power(self, node: topology.Node) -> str:
        return "on" if node.name in self.booting or nodes.is_running(node) else "off"


def log(message: str) -> None:
    """One line of the switch's log, stamped to the millisecond in UTC (the nodes'
    journals share the host's clock: the failover timeline puts them side by side)."""
    now = time.time()
    print(f"{time.strftime('%F %T', time.gmtime(now))}.{int(now % 1 * 1000):03d} {message}",
          flush=True)


class _Server(ThreadingHTTPServer):
    """At most MAX_CONNECTIONS handled at once: one more is closed, not queued."""

    daemon_threads = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            log(f"{client_address[0]} refused: {MAX_CONNECTIONS} connections open")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def _length(value: str | None) -> int:
    try:
        n = int(value or "")
    except ValueError:
        raise ValueError("Content-Length missing or not a number") from None
    if not 0 < n <= MAX_BODY:
        raise ValueError(f"Content-Length {n} outside 1..{MAX_BODY}")
    return n


def handler(switch: Switch) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT  # for the request line, headers and body alike

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            peer, body, req = self.client_address[0], b"", {}
            try:
                switch.admit(peer)
                body = self.rfile.read(_length(self.headers.get("Content-Length")))
                req = switch.check(body, self.headers.get("X-Halab-Signature", ""), peer)
                reply, code = switch.act(req), 200
            except PermissionError as exc:
                reply, code = {"error": str(exc)}, 403
            except (ValueError, HalabError) as exc:
                reply, code = {"error": str(exc)}, 400
            except OSError as exc:  # the client was too slow or went away
                log(f"{peer} dropped: {exc}")
                self.close_connection = True
                return
            # The reply names the request's nonce and is signed with the key the request
            # was checked against: the agent trusts only the answer to its own question.
            if code == 200:
                reply = {**reply, "nonce": req.get("nonce")}
            data = json.dumps(reply).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if code == 200:
                self.send_header("X-Halab-Signature", sign(switch.key_for(peer), data))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
            log(f"{peer} {body[:200].decode(errors='replace')} -> {code} {reply}")

        def log_message(self, *args) -> None:
            pass

    return Handler


def serve() -> None:
    _Server((bind_address(), port()), handler(Switch(ensure_key()))).serve_forever()


def _argv() -> list[str]:
    return [sys.executable, "-m", "halab", "fenced", "serve"]


def running_pid() -> int | None:
    """The daemon's PID if the recorded process is still the one a `start` launched:
    same start time and its arguments (a PID can be reused by anything). Any
    interpreter: a daemon another checkout's halab started is the lab's too, and a
    `halab down` that passed it by left it holding the switch's port."""
    try:
        pid, started = pid_path().read_text().split()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if nodes._starttime(int(pid)) != started or \
            cmdline.split(b"\0")[1:-1] != [a.encode() for a in _argv()[1:]]:
        return None
    return int(pid)


def start() -> None:
    """Start the daemon in the background unless it runs (needs the lab network)."""
    if running_pid():
        return
    if not net.netns_alive():
        raise HalabError("the lab is not up: run `halab up`")
    ensure_key()
    if _listening():  # the wait below would take that listener for ours
        raise HalabError(f"{bind_address()}:{port()} is already served by a process "
                         "this lab did not record: find it with `ss -ltnp`")
    with log_path().open("a") as log:
        proc = subprocess.Popen(_argv(), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    pid_path().write_text(f"{proc.pid} {nodes._starttime(proc.pid)}\n")

    def up() -> bool:
        if proc.poll() is not None:
            raise HalabError(f"fence daemon exited at start (log: {log_path()})")
        return _listening()

    if not poll.until(up, 10, interval=0.1):
        raise HalabError(f"fence daemon does not listen on {bind_address()}:{port()} "
                         f"(log: {log_path()})")


def _listening() -> bool:
    """Something accepts connections on the switch's address and port."""
    try:
        with socket.create_connection((bind_address(), port()), timeout=0.5):
            return True
    except OSError:
        return False


def stop() -> None:
    pid = running_pid()
    if pid is None:
        pid_path().unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    if not poll.until(lambda: not nodes._pid_alive(pid), 10, interval=0.1):
        os.kill(pid, signal.SIGKILL)
    pid_path().unlink(missing_ok=True)
