"""Layers Progress Proxy: one upstream poll loop per resource, fanned out to every watcher."""

__version__ = "0.1.0"
