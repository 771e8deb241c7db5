"""The ``layers-proxy`` command: serve, simulate, demo, token."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from proxy.logs import configure_logging
from proxy.settings import SettingsError, load_settings


def _serve(args: argparse.Namespace) -> int:
    from proxy.server import install_fast_loop, serve

    try:
        settings = load_settings(config_path=args.config)
    except SettingsError as exc:
        print(f"layers-proxy serve: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    install_fast_loop()
    asyncio.run(serve(settings))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from proxy.simulator.cli import run

    result: int = run(args)
    return result


def _demo(args: argparse.Namespace) -> int:
    from proxy.demo import run_demo

    return run_demo(args)


def _token(args: argparse.Namespace) -> int:
    from proxy.tokens import mint_token

    try:
        settings = load_settings(
            env={k: v for k, v in os.environ.items()} | {"LAYERS_API_KEY": "unused-for-tokens"},
            config_path=args.config,
        )
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
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy. Reads LAYERS_API_KEY (required), LAYERS_API_URL, REDIS_URL, "
        "PROXY_HOST, PROXY_PORT, PROXY_AUTH and every PROXY_<SETTING>; see README.",
    )
    serve.add_argument("--config", help="TOML config file (also PROXY_CONFIG); env wins")
    serve.set_defaults(func=_serve)

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
