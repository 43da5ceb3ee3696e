"""Real server processes for the tests: on 127.0.0.1, on free ports, stopped by their own pids.

Each service runs in its own session (process group), so stopping it never touches anything the
test did not start: no ``pkill``, no ``ray stop``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held open together while choosing, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout} s")


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session, output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen, grace: float = 10) -> None:
    """Stop a process started by ``start`` and everything in its process group."""
    stop_pids([proc.pid], grace, group=True)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


def stop_pids(pids: Iterable[int], grace: float = 10, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, to exactly these pids (or their groups)."""
    pids = list(pids)
    send = _killpg if group else os.kill
    for pid in pids:
        _signal(send, pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        _signal(send, pid, signal.SIGKILL)


def _killpg(pid: int, sig: int) -> None:
    os.killpg(pid, sig)  # pid is the group leader: start() made it one


def _signal(send, pid: int, sig: int) -> None:
    try:
        send(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our child, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False
