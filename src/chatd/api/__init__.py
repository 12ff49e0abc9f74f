"""The HTTP API: FastAPI app, routes, schemas (the public contract), SSE and WebSocket streams.

Only this package knows HTTP status codes.
"""
