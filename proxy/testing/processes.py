"""Start and stop the real processes the integration tests and benchmarks drive.

Each helper starts one process on a free loopback port, waits for its ready line on stdout, keeps
its output (for failure messages), and stops it with SIGTERM (or SIGKILL for fault tests).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ManagedProcess:
    """A child process whose output is collected line by line."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    _pump_thread: threading.Thread | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        """Base URL on loopback."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready: str, timeout_s: float = 20.0) -> ManagedProcess:
        """Spawn and wait until a line containing ``ready`` appears."""
        self.proc = subprocess.Popen(  # noqa: S603 (argv built by this module, no shell)
            self.argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        self.wait_for(ready, timeout_s)
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, text: str, timeout_s: float) -> str:
        """The first output line containing ``text``; raises with the output on timeout."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if text in line:
                        return line
                seen = len(self.lines)
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited early:\n" + self.output())
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name} not ready in {timeout_s}s:\n" + self.output())
                self._cond.wait(min(left, 0.2))

    def output(self) -> str:
        """Everything the process printed so far."""
        with self._cond:
            return "\n".join(self.lines[-200:])

    def all_output(self) -> str:
        """Every line the process printed (for secret-leak checks)."""
        with self._cond:
            return "\n".join(self.lines)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            self._close_pipe()
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return self.kill()
        self._close_pipe()
        return code

    def kill(self) -> int | None:
        """SIGKILL at once (a crash, for failover tests)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait(10)
        self._close_pipe()
        return code

    def _close_pipe(self) -> None:
        # Let the reader drain to EOF, then close, so no file object is left for the GC.
        if self._pump_thread is not None:
            self._pump_thread.join(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def pause(self) -> None:
        """SIGSTOP (a stalled process, for fencing tests)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)


def _python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "LAYERS_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


REDIS_READY = "Ready to accept connections"


def start_redis(
    port: int | None = None,
    *,
    persistent: bool = False,
    password: str | None = None,
    workdir: str | None = None,
    extra_args: Sequence[str] = (),
    name: str = "redis",
    ready: str = REDIS_READY,
) -> ManagedProcess:
    """A private redis-server on ``port`` (a free one by default).

    No persistence by default, so a restart comes back empty. ``persistent`` turns on the
    append-only file with an fsync per write (``--appendonly yes --appendfsync always``), so a
    restart on the same ``workdir`` (see ``restart_redis``) comes back with every acknowledged
    write, even after SIGKILL. ``password`` sets ``requirepass``. ``extra_args`` go last (a
    replica's ``--replicaof``, a cluster node's options); ``ready`` is the line to wait for.
    """
    port = port or free_port()
    workdir = workdir or tempfile.mkdtemp(prefix="lp-redis-")
    argv = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        workdir,
        "--loglevel",
        "notice",
    ]
    if persistent:
        argv += ["--appendonly", "yes", "--appendfsync", "always"]
    else:
        argv += ["--appendonly", "no"]
    if password:
        argv += ["--requirepass", password]
    argv += extra_args
    return ManagedProcess(name, argv, _python_env(), port).start(ready)


def redis_binary() -> str:
    """The redis-server executable, or a clear error naming the package."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    return binary


def redis_workdir(proc: ManagedProcess) -> Path:
    """The ``--dir`` a redis-server from ``start_redis`` keeps its files in."""
    return Path(proc.argv[proc.argv.index("--dir") + 1])


def restart_redis(old: ManagedProcess, timeout_s: float = 20.0) -> ManagedProcess:
    """Start redis-server again with ``old``'s options: same port, same directory.

    ``old`` is killed first if it still runs. Without persistence the new server is empty;
    with ``persistent=True`` it loads the append-only file the old one wrote.
    """
    if old.proc is not None and old.proc.poll() is None:
        old.kill()
    proc = ManagedProcess(old.name, list(old.argv), dict(old.env), old.port)
    deadline = time.monotonic() + timeout_s
    while True:
        # The port is normally free at once (redis-server binds with SO_REUSEADDR); retry
        # briefly in case the old process is still releasing it.
        try:
            return proc.start(REDIS_READY, timeout_s=max(1.0, deadline - time.monotonic()))
        except RuntimeError:
            proc.kill()  # reaps it and closes its pipe
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
            proc = ManagedProcess(old.name, list(old.argv), dict(old.env), old.port)


def start_simulator(
    port: int | None = None, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> ManagedProcess:
    """The Layers simulator as a real HTTP server."""
    port = port or free_port()
    argv = [sys.executable, "-m", "proxy", "simulate", "--port", str(port), *args]
    proc = ManagedProcess("simulator", argv, _python_env(env), port)
    return proc.start("simulator listening on")


def start_proxy(
    env: Mapping[str, str],
    port: int | None = None,
    args: Sequence[str] = (),
    name: str = "proxy",
) -> ManagedProcess:
    """One proxy replica (``layers-proxy serve``) with ``env`` as its configuration."""
    port = port or free_port()
    full_env = _python_env({"PROXY_PORT": str(port), **env})
    argv = [sys.executable, "-m", "proxy", "serve", *args]
    return ManagedProcess(name, argv, full_env, port).start("proxy listening on")


def proxy_process(
    env: Mapping[str, str],
    port: int | None = None,
    args: Sequence[str] = (),
    name: str = "proxy",
) -> ManagedProcess:
    """Like ``start_proxy`` but not started yet: call ``.start(PROXY_READY)``.

    For callers that must be able to stop the process even when it never becomes ready.
    """
    port = port or free_port()
    full_env = _python_env({"PROXY_PORT": str(port), **env})
    argv = [sys.executable, "-m", "proxy", "serve", *args]
    return ManagedProcess(name, argv, full_env, port)


PROXY_READY = "proxy listening on"


def write_config(text: str) -> Path:
    """A temporary TOML config file."""
    fd, path = tempfile.mkstemp(prefix="lp-config-", suffix=".toml")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return Path(path)
