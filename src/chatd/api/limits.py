"""Request-size limit (413) before a body is read into memory."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_upload_bytes: int, upload_paths: tuple[str, ...] = ("/api/v1/files",)) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes
        self.upload_paths = upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        # Multipart framing adds a little on top of the file itself.
        limit = self.max_upload_bytes + 64 * 1024 if path.startswith(self.upload_paths) else self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        await _too_large(send, limit)
                        return
                except ValueError:
                    pass
        seen = 0
        rejected = False

        async def limited() -> Message:
            nonlocal seen, rejected
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    rejected = True
                    raise _TooLarge()
            return msg

        started = False

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if rejected:
                # The app saw the body reading fail and answers for it (FastAPI says 400, "error
                # parsing the body"); the client's mistake is the size: answer 413 instead.
                if msg["type"] == "http.response.start" and not started:
                    started = True
                    await _too_large(send, limit)
                return
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited, tracking_send)
        except _TooLarge:
            if not started:
                await _too_large(send, limit)
        except Exception:
            if rejected and not started:
                await _too_large(send, limit)
            else:
                raise


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    payload = json.dumps({"message": f"The request body is larger than {limit} bytes.", "code": "payload_too_large"}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
