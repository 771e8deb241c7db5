"""What a failed store call raises, so callers outside ``store/`` never import ``redis``."""

from __future__ import annotations

from redis.exceptions import RedisError as StoreError

from proxy.store.health import StoreUnavailable

__all__ = ["StoreError", "StoreUnavailable"]
