"""The ``layers-proxy`` command: serve, check-config, simulate, demo, token."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import socket
import sys
from collections.abc import Sequence

from proxy import __version__
from proxy.logs import configure_logging
from proxy.settings import (
    SettingsError,
    describe,
    env_names,
    load_settings,
    load_settings_with_sources,
)

# Errors from binding the listening socket; anything else from serve() is a real crash.
_BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def _listen_error(exc: OSError) -> str | None:
    """Why the listening socket could not be opened, or None when ``exc`` is something else."""
    if isinstance(exc, socket.gaierror):
        return str(exc.strerror or exc).lower()  # an unresolvable PROXY_HOST
    if exc.errno in _BIND_ERRNOS:
        return os.strerror(exc.errno).lower()
    return None


def _probe_listen(host: str, port: int) -> None:
    """Bind the listen address once and let it go, so a taken port fails before any start-up work.

    It binds the way asyncio's create_server does (SO_REUSEADDR, IPv6 sockets IPv6-only); the
    real bind can still lose a race, which _serve reports the same way.
    """
    if port == 0:
        return
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)


def _serve(args: argparse.Namespace) -> int:
    from proxy.server import install_fast_loop, serve
    from proxy.workers import Supervisor, is_worker

    try:
        settings = load_settings(config_path=args.config)
    except SettingsError as exc:
        print(f"layers-proxy serve: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if not is_worker():
            _probe_listen(settings.host, settings.port)  # workers share the port on purpose
        if settings.worker_count > 1 and not is_worker():
            serve_args = ["--config", args.config] if args.config else []
            return Supervisor(settings.worker_count, settings.host, settings.port, serve_args).run()
        configure_logging(settings.log_level)
        install_fast_loop()
        asyncio.run(serve(settings))
    except OSError as exc:
        why = _listen_error(exc)
        if why is None:
            raise
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        print(
            f"layers-proxy serve: cannot listen on {host}:{settings.port}: {why}", file=sys.stderr
        )
        return 2
    return 0


def _check_config(args: argparse.Namespace) -> int:
    try:
        settings, sources = load_settings_with_sources(config_path=args.config)
    except SettingsError as exc:
        print(f"layers-proxy check-config: configuration error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(describe(settings, sources))
    print("layers-proxy check-config: the configuration is valid", file=sys.stderr)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from proxy.simulator.cli import run

    result: int = run(args)
    return result


def _demo(args: argparse.Namespace) -> int:
    from proxy import demo

    # run_demo binds its simulator and proxy to the module's HOST; --host sets it until run_demo
    # takes the address itself (mypy flags this line if HOST goes away).
    demo.HOST = args.host
    return demo.run_demo(args)


def _token(args: argparse.Namespace) -> int:
    from proxy.tenancy.tokens import mint_token

    env = dict(os.environ)
    # Minting needs only the tenants; stand in for the API key unless one is set (under either
    # name: setting the other one too would be a disagreement).
    if not any(env.get(name) for name in env_names("layers_api_key")):
        env[env_names("layers_api_key")[0]] = "unused-for-tokens"
    try:
        settings = load_settings(env=env, config_path=args.config)
    except SettingsError as exc:
        print(f"layers-proxy token: configuration error: {exc}", file=sys.stderr)
        return 2
    tenant = next((t for t in settings.tenants if t.id == args.tenant), None)
    if tenant is None:
        known = ", ".join(t.id for t in settings.tenants) or "none configured"
        print(
            f"layers-proxy token: unknown tenant {args.tenant!r} (known: {known})", file=sys.stderr
        )
        return 2
    kid, secret = tenant.secrets[0] if args.kid is None else (args.kid, tenant.secret_for(args.kid))
    if secret is None:
        print(
            f"layers-proxy token: tenant {tenant.id!r} has no secret with kid {kid!r}",
            file=sys.stderr,
        )
        return 2
    try:
        token = mint_token(
            tenant=tenant.id,
            secret=secret,
            kid=kid,
            containers=args.container or (),
            jobs=args.job or (),
            projects=args.project or (),
            ttl_s=args.ttl,
            audience=settings.token_audience,
        )
    except ValueError as exc:
        print(f"layers-proxy token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and --help)."""
    parser = argparse.ArgumentParser(
        prog="layers-proxy",
        description="A coalescing progress proxy for the Layers Partner API.",
    )
    parser.add_argument("--version", action="version", version=f"layers-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy. Settings come from the TOML file and the environment "
        "(PROXY_<SETTING>, which wins; PROXY_LAYERS_API_KEY or LAYERS_API_KEY is required); "
        "see docs/configuration.md.",
    )
    serve.add_argument("--config", help="TOML config file (also PROXY_CONFIG); env wins")
    serve.set_defaults(func=_serve)

    check = sub.add_parser(
        "check-config",
        help="validate the configuration and print it",
        description="Validate the configuration exactly as serve would and print the effective "
        "settings as TOML, each with its source, secrets masked. Exit 0 when valid, 2 with the "
        "error otherwise.",
    )
    check.add_argument("--config", help="TOML config file (also PROXY_CONFIG); env wins")
    check.set_defaults(func=_check_config)

    from proxy.simulator.cli import configure_parser

    simulate = sub.add_parser(
        "simulate",
        help="run the Layers API simulator",
        description="Run a fake Layers API with scripted timelines, budgets and faults.",
    )
    configure_parser(simulate)
    simulate.set_defaults(func=_simulate)

    demo = sub.add_parser(
        "demo",
        help="run the simulator and the proxy with containers in flight",
        description="Start the simulator with containers in flight and the proxy in front of "
        "it (Redis at REDIS_URL when reachable, otherwise embedded), and print what to open.",
    )
    demo.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the demo's proxy and simulator bind (default 127.0.0.1; 0.0.0.0 in a "
        "container)",
    )
    demo.add_argument("--port", type=int, default=8080, help="proxy port (default 8080)")
    demo.add_argument("--sim-port", type=int, default=8090, help="simulator port (default 8090)")
    demo.add_argument("--containers", type=int, default=12, help="containers in flight")
    demo.add_argument(
        "--redis-url",
        default=None,
        help="Redis to use (default: REDIS_URL or redis://127.0.0.1:6379/0 when reachable, "
        "else embedded memory://)",
    )
    demo.add_argument("--duration", type=float, default=0, help="stop after N seconds (0 = never)")
    demo.set_defaults(func=_demo)

    token = sub.add_parser(
        "token",
        help="mint a capability token for a tenant",
        description="Print a capability token for a tenant from the config file.",
    )
    token.add_argument("--config", help="TOML config file with [[tenants]] (also PROXY_CONFIG)")
    token.add_argument("--tenant", required=True, help="tenant id")
    token.add_argument("--container", action="append", help="container id (repeatable)")
    token.add_argument("--job", action="append", help="job id (repeatable)")
    token.add_argument(
        "--project",
        action="append",
        help="project id (repeatable): any container or job of the project, verified upstream",
    )
    token.add_argument("--ttl", type=int, default=600, help="lifetime in seconds (max 3600)")
    token.add_argument("--kid", default=None, help="which of the tenant's secrets (default first)")
    token.set_defaults(func=_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
