"""Per-chat live streams: part buffers, subscribers, subscribe-with-snapshot, notification fan-in.

Durable events (messages, status, queue, retry, error) travel as small notifications and are
re-read from the database; transient message parts are published locally by the worker.
"""

from chatd.streams.hub import Notification, StreamHub

__all__ = ["Notification", "StreamHub"]
