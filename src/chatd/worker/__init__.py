"""Workers: acquire pending chats, heartbeat them, run their turns, recover a dead worker's chats.

`Workers(deps).run(stop)` is what `chatd serve` runs next to the API; `ChatTurn` is one turn.
"""

from chatd.worker.pool import Workers
from chatd.worker.turn import (
    ChatTurn,
    TokenSource,
    ToolProvider,
    TurnContext,
    TurnDeps,
    TurnEndHook,
)

__all__ = ["ChatTurn", "TokenSource", "ToolProvider", "TurnContext", "TurnDeps", "TurnEndHook", "Workers"]
