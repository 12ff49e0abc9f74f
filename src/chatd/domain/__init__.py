"""Pure types and rules: ids, chat status and its transitions, message parts, stream events.

Nothing here does I/O; every other package may import it.
"""
