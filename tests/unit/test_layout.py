"""The layout rules of issue 11, checked on every run: small modules, one door to Redis,
no upward import from the tenancy and services packages into the HTTP edge."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(10)

PACKAGE = Path(__file__).resolve().parents[2] / "proxy"
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_module_in_the_package_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (at most {MAX_LINES} lines): {long}"


def test_only_the_store_imports_redis() -> None:
    doors = [
        str(p.relative_to(PACKAGE))
        for p in _modules()
        if p.parent.name != "store"
        and any(n == "redis" or n.startswith("redis.") for n in _imports(p))
    ]
    assert not doors, f"Redis is reached through proxy/store only: {doors}"


def test_services_and_tenancy_never_import_the_http_edge() -> None:
    upward = [
        str(p.relative_to(PACKAGE))
        for pkg in ("services", "tenancy")
        for p in sorted((PACKAGE / pkg).rglob("*.py"))
        if any(n == "proxy.web" or n.startswith("proxy.web.") for n in _imports(p))
    ]
    assert not upward, f"imports from proxy.web: {upward}"
