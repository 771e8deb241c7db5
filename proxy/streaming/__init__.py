"""The fan-out room: every open stream of a replica (``StreamHub``) and each client's
``StreamSession``. Nothing here knows HTTP: the edge hands a session a ``Sink`` to write to.
"""

from proxy.streaming.hub import SHUTDOWN_RETRY_MS, StreamHub
from proxy.streaming.ports import Feed, Outcome, Sink
from proxy.streaming.session import StreamSession

__all__ = ["SHUTDOWN_RETRY_MS", "Feed", "Outcome", "Sink", "StreamHub", "StreamSession"]
