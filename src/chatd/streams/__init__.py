"""Per-chat live streams: part buffers and coalescing (`parts`), subscribers with
subscribe-with-snapshot (`subscribers`), relaying parts between replicas (`relay`, `mirror`),
notification fan-in (`hub`, `notes`), and a user's chats watch (`watch`).

Durable events (messages, status, queue, retry, error) travel as small notifications and are
re-read from the database; transient message parts are published locally by the worker.
"""

from chatd.streams.hub import StreamHub
from chatd.streams.notes import Notification

__all__ = ["Notification", "StreamHub"]
