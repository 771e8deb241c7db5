"""Helpers for tests and benchmarks: real processes on loopback (redis-server, simulator, proxy)."""
