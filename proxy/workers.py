"""``serve --workers N``: N full replicas on one port, supervised by a small parent process.

Each worker is an ordinary ``layers-proxy serve`` process listening with ``SO_REUSEPORT``, so the
kernel spreads connections over them; they coordinate through Redis exactly like replicas on
separate machines (leases, fences, the shared budget). The parent only starts them, restarts
one that dies (within a second), and on SIGTERM/SIGINT stops them all (SIGTERM, then SIGKILL
after ``_STOP_WITHIN_S``). Workers publish their metrics into a shared directory so that a
scrape of any one of them reports the whole group (``proxy/metrics_group.py``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from types import FrameType

WORKER_INDEX_ENV = "LP_WORKER_INDEX"  # set in each worker; not a PROXY_ setting on purpose
GROUP_DIR_ENV = "LP_WORKER_GROUP_DIR"
_STOP_WITHIN_S = 9.0
_RESTART_DELAY_S = 0.5
_TICK_S = 0.2


def is_worker() -> bool:
    """True inside a worker started by the supervisor."""
    return WORKER_INDEX_ENV in os.environ


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, count: int, host: str, port: int, serve_args: Sequence[str]) -> None:
        self.count = count
        self.port = port or _free_port(host)
        self.host = host
        self.group_dir = tempfile.mkdtemp(prefix="lp-workers-")
        self._args = list(serve_args)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = False

    def _spawn(self, index: int) -> None:
        env = dict(os.environ)
        env.update(
            {
                "PROXY_WORKERS": "1",
                "PROXY_PORT": str(self.port),
                WORKER_INDEX_ENV: str(index),
                GROUP_DIR_ENV: self.group_dir,
            }
        )
        argv = [sys.executable, "-m", "proxy", "serve", *self._args]
        self._children[index] = subprocess.Popen(argv, env=env)  # noqa: S603 (our own argv)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; returns the exit code."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # workers ignore it too (documented)
        print(
            f"layers-proxy: supervising {self.count} workers on {self.host}:{self.port}",
            flush=True,
        )
        for index in range(self.count):
            self._spawn(index)
        while not self._stopping:
            time.sleep(_TICK_S)
            for index, child in list(self._children.items()):
                code = child.poll()
                if code is not None and not self._stopping:
                    print(
                        f"layers-proxy: worker {index} exited with {code}; restarting",
                        file=sys.stderr,
                        flush=True,
                    )
                    time.sleep(_RESTART_DELAY_S)
                    self._spawn(index)
        return self._stop_all()

    def _stop_all(self) -> int:
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_WITHIN_S
        for child in self._children.values():
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return 0
