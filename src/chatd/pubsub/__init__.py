""""Something changed" hints between replicas: in-process (one replica) and PostgreSQL LISTEN/NOTIFY.

Notifications are hints; the database is the truth. A lost one may cost latency, never correctness.
"""

from chatd.pubsub.base import Callback, PubSub, Unsubscribe
from chatd.pubsub.memory import MemoryPubSub

__all__ = ["Callback", "MemoryPubSub", "PubSub", "Unsubscribe"]
