"""Workers: acquire pending chats, heartbeat them, run their turns, recover a dead worker's chats."""
