"""Benchmark (issue 11 item 8): an nginx microcache in front of 2 replicas vs the replicas alone.

One run, one stack (Redis, the simulator, 2 replicas), two phases of the same length:

A. N clients poll the replicas directly (client *i* watches container *i* mod M through replica
   ⌊*i*/M⌋ mod 2, as ``python -m bench coalescing`` does);
B. the same N clients (same jitter seeds) poll through one nginx whose microcache keeps each poll
   answer as long as the replica's ``Cache-Control`` allows (``proxy_cache_valid`` is not set, so
   nothing overrides it); nginx balances its misses and refreshes over the same 2 replicas.

Each phase gets its own M containers with the same scripts (same stages, same offsets), created
when the phase starts, so both start from a proxy that knows nothing about them. Between the
phases the benchmark waits for the replicas to stop polling phase A's containers (``linger_s``).
Measured per phase: what reached "Layers" against the ideal cadence schedule, what reached the
replicas (their ``/admin/stats`` ``client_requests``), what the clients got and how stale it was.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import random
import shutil
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.coalescing import Params as CoalescingParams
from bench.coalescing import make_containers, run_clients
from bench.microcache_report import Phase, build_report
from bench.procfs import cpu_s, raise_nofile
from bench.report import Report
from bench.stack import Stack, admin_stats, running_stack, wait_until
from proxy.testing.processes import ManagedProcess, free_port

# The replicas keep polling a resource this long after its last client (proxy default linger_s).
LINGER_S = 15.0
NGINX_MISSING = "nginx is not installed: apt-get install nginx-light"

# The microcache as docs/cdn.md shows it. Only the first block (process, paths, the access log
# the benchmark counts cache statuses with) is specific to the benchmark.
NGINX_CONF = """\
# -- benchmark only: a private nginx in {prefix} ------------------------------------------------
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 8192; }}

http {{
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    access_log off;
    log_format cache_status '$upstream_cache_status $status';

    # -- the microcache (docs/cdn.md) -----------------------------------------------------------
    proxy_cache_path {prefix}/cache keys_zone=layers_polls:10m max_size=256m inactive=2m
                     use_temp_path=off;

    upstream layers_proxy {{
{servers}
        keepalive 64;
        keepalive_timeout 20s;       # below the replicas' keepalive_timeout_s (30 s)
    }}

    server {{
        listen 127.0.0.1:{port};

        # Poll answers: cacheable for as long as the replica's Cache-Control allows.
        location ~ ^/v1/(content/[^/]+/progress|jobs/[^/]+)$ {{
            # A long poll (Prefer: wait=N) must reach a replica with its If-None-Match; nginx
            # strips conditional headers on every request of a caching location, bypassed or not.
            if ($http_prefer) {{ rewrite ^ /_uncached$uri last; }}

            proxy_pass http://layers_proxy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;

            proxy_cache layers_polls;
            proxy_cache_key $scheme$host$request_uri;
            proxy_cache_lock on;                 # one miss per URL goes to a replica
            proxy_cache_background_update on;    # refresh after max-age while serving the old one
{use_stale}
            # Token-mode answers are no-cache anyway; never store or serve a caller's answer.
            proxy_cache_bypass $http_authorization $arg_access_token;
            proxy_no_cache $http_authorization $arg_access_token;
            add_header X-Cache-Status $upstream_cache_status always;
            access_log {prefix}/cache.log cache_status buffer=64k flush=1s;
        }}

        location /_uncached/ {{
            internal;
            rewrite ^/_uncached(/.*)$ $1 break;
            proxy_pass http://layers_proxy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_read_timeout 60s;              # above long_poll_max_s (30 s)
        }}

        # Streams and everything else: straight through, unbuffered (docs/deploy.md).
        location / {{
            proxy_pass http://layers_proxy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 1h;
            access_log off;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Params:
    """The knobs of one run."""

    clients: int = 300
    containers: int = 30
    duration_s: float = 40.0
    replicas: int = 2
    procs: int = 2
    seed: int = 7
    # proxy_cache_use_stale's parameters; "" leaves stale answers to the replica's
    # stale-while-revalidate and stale-if-error (see docs/cdn.md for why that is the default).
    use_stale: str = ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command-line flags of ``python -m bench microcache``."""
    p.add_argument("--clients", type=int, default=Params.clients, help="N polling clients")
    p.add_argument("--containers", type=int, default=Params.containers, help="M containers")
    p.add_argument("--duration", type=float, default=Params.duration_s, help="seconds per phase")
    p.add_argument("--replicas", type=int, default=Params.replicas, help="proxy replicas")
    p.add_argument("--procs", type=int, default=Params.procs, help="client processes")
    p.add_argument("--seed", type=int, default=Params.seed)
    p.add_argument(
        "--use-stale",
        default=Params.use_stale,
        help="parameters of proxy_cache_use_stale, e.g. 'updating error timeout' (default: none)",
    )
    p.add_argument("--quick", action="store_true", help="100 clients, 10 containers, 25 s")


def params_from(args: argparse.Namespace) -> Params:
    """Flags to parameters (``--quick`` overrides the sizes)."""
    if args.quick:
        return Params(100, 10, 25.0, args.replicas, 1, args.seed, args.use_stale)
    return Params(
        args.clients,
        args.containers,
        args.duration,
        args.replicas,
        args.procs,
        args.seed,
        args.use_stale,
    )


def nginx_binary() -> str:
    """The nginx executable, or exit with one line saying how to install it."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise SystemExit(NGINX_MISSING)
    return found


def nginx_conf(prefix: str, port: int, upstreams: list[str], use_stale: str) -> str:
    """The benchmark's nginx.conf: the microcache of docs/cdn.md over ``upstreams``."""
    servers = "\n".join(f"        server {u};" for u in upstreams)
    stale = (
        f"            proxy_cache_use_stale {use_stale};"
        if use_stale
        else "            # No proxy_cache_use_stale: the replica's stale-* directives decide."
    )
    return NGINX_CONF.format(prefix=prefix, port=port, servers=servers, use_stale=stale)


@dataclass
class Nginx:
    """A private nginx: its process, the access log of the cached location, its worker."""

    proc: ManagedProcess
    log: Path
    conf: str
    worker_pid: int

    def cache_statuses(self) -> Counter[str]:
        """``$upstream_cache_status $status`` pairs of every cached-location answer so far."""
        counts: Counter[str] = Counter()
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                counts[line.strip()] += 1
        return counts

    def cpu_s(self) -> float:
        """CPU seconds of the master and its worker."""
        assert self.proc.proc is not None
        return cpu_s(self.proc.proc.pid) + cpu_s(self.worker_pid)


@contextlib.contextmanager
def running_nginx(upstreams: list[str], use_stale: str) -> Iterator[Nginx]:
    """nginx in the foreground with its own prefix and config in a temp dir; stopped after."""
    binary = nginx_binary()
    prefix = tempfile.mkdtemp(prefix="lp-nginx-")
    os.chmod(prefix, 0o755)  # noqa: S103 (run as root, the worker is "nobody" and needs to enter)
    try:
        for sub in ("tmp", "cache"):
            os.makedirs(os.path.join(prefix, sub))
        port = free_port()
        conf = nginx_conf(prefix, port, upstreams, use_stale)
        conf_path = os.path.join(prefix, "nginx.conf")
        Path(conf_path).write_text(conf)
        argv = [binary, "-p", prefix, "-c", conf_path, "-g", "daemon off;"]
        proc = ManagedProcess("nginx", argv, dict(os.environ), port)
        proc.start("start worker process ")
        try:
            line = proc.wait_for("start worker process ", 5)
            worker = int(line.rsplit(" ", 1)[-1])
            wait_until(lambda: _accepts(port), 5)
            yield Nginx(proc, Path(prefix, "cache.log"), conf, worker)
        finally:
            proc.stop()
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _replica_counters(stack: Stack) -> tuple[int, int, float]:
    """Client requests, 304s and CPU seconds, summed over the replicas."""
    requests = not_modified = 0
    cpu = 0.0
    for proxy in stack.proxies:
        stats = admin_stats(proxy.url)
        requests += int(stats["client_requests"])
        not_modified += int(stats["not_modified"])
        assert proxy.proc is not None
        cpu += cpu_s(proxy.proc.pid)
    return requests, not_modified, cpu


def run_phase(
    name: str, stack: Stack, front: Stack, p: Params, nginx: Nginx | None = None
) -> Phase:
    """Fresh containers, the pollers against ``front``'s proxies, the replicas' counters."""
    containers = make_containers(stack.simulator, p.containers, random.Random(p.seed))
    requests0, not_modified0, cpu0 = _replica_counters(stack)
    front_cpu0 = nginx.cpu_s() if nginx else 0.0
    coalescing = CoalescingParams(
        p.clients, p.containers, p.duration_s, p.replicas, p.procs, p.seed
    )
    result, end_wall = run_clients(front, containers, coalescing)
    time.sleep(0.5)  # let the last answers be counted
    requests1, not_modified1, cpu1 = _replica_counters(stack)
    return Phase(
        name=name,
        containers=containers,
        result=result,
        end_wall=end_wall,
        replica_requests=requests1 - requests0,
        replica_not_modified=not_modified1 - not_modified0,
        replica_cpu_s=cpu1 - cpu0,
        front_cpu_s=(nginx.cpu_s() - front_cpu0) if nginx else None,
        cache_statuses=dict(nginx.cache_statuses()) if nginx else {},
    )


def run(p: Params) -> Report:
    """Phase A (replicas alone), then phase B (nginx microcache in front); build the report."""
    nginx_binary()  # fail before starting anything
    raise_nofile()
    with running_stack(replicas=p.replicas) as stack:
        direct = run_phase("A", stack, stack, p)
        time.sleep(LINGER_S + 1.0)  # the replicas stop polling phase A's containers
        upstreams = [f"127.0.0.1:{proxy.port}" for proxy in stack.proxies]
        with running_nginx(upstreams, p.use_stale) as nginx:
            front = dataclasses.replace(stack, proxies=[nginx.proc])
            cached = run_phase("B", stack, front, p, nginx)
            conf = nginx.conf
        requests = stack.simulator.progress_requests()
    return build_report(p, direct, cached, requests, conf)
