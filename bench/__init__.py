"""Benchmarks of the Layers Progress Proxy: coalescing, cached-poll throughput, SSE fan-out."""
