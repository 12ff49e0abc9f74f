"""An async client of the workspace agent (`chatd.domain.workspace.WorkspaceAgent` over HTTP).

httpx2 errors are converted here, once: a connection that cannot be made is `AgentUnreachable`
(nothing reached the agent, so the caller may restart it and retry); a refusal by the agent is
`AgentRequestFailed` with the agent's message, which the tools hand to the model as is.
"""

from __future__ import annotations

from typing import Any

import httpx2

from chatd.domain.workspace import (
    AgentUnreachable,
    FileContent,
    FileEdits,
    Instructions,
    ProcessState,
    Signal,
)
from chatd.errors import InvalidInput, NotFound, Unauthenticated, Unavailable

__all__ = ["AgentClient", "AgentNotFound", "AgentRequestFailed", "AgentTimeout", "AgentUnreachable"]

# Long polls (process output with a wait) add their wait on top of this.
DEFAULT_TIMEOUT = 30.0


class AgentTimeout(Unavailable):
    """The agent accepted the request but did not answer in time (it may have acted on it)."""


class AgentRequestFailed(InvalidInput):
    """The agent refused the request (bad path, edit that does not apply, unknown process, ...)."""

    def __init__(self, message: str, code: str, status: int) -> None:
        super().__init__(message, {"code": code, "status": status})
        self.agent_code = code
        self.status = status


class AgentNotFound(NotFound):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, {"code": code})
        self.agent_code = code


class AgentClient:
    """One workspace agent. Reuses one connection pool; close it with `aclose`."""

    def __init__(self, base_url: str, token: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx2.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx2.Timeout(timeout),
            # The agent is on loopback or reached directly: never through a proxy from the environment.
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        extra_timeout: float = 0.0,
        timeout: float | None = None,
    ) -> Any:
        t = timeout if timeout is not None else self.timeout + extra_timeout
        if self._http.is_closed:
            # The manager closes a client when its agent stops or is replaced; holders of the old
            # client then re-resolve the agent, as after a refused connection.
            raise AgentUnreachable("The connection to this workspace agent was closed (the agent stopped or restarted).")
        try:
            response = await self._http.request(
                method, f"/v1{path}", json=json, params=params, timeout=httpx2.Timeout(t)
            )
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
            raise AgentUnreachable(f"The workspace agent at {self.base_url} is not reachable.") from exc
        except httpx2.TimeoutException as exc:
            raise AgentTimeout(f"The workspace agent did not answer within {t:.0f} s.") from exc
        except httpx2.TransportError as exc:
            raise AgentUnreachable(f"The connection to the workspace agent failed: {exc}") from exc
        if response.status_code == 401:
            raise Unauthenticated("The workspace agent refused the token.")
        try:
            body = response.json()
        except ValueError as exc:
            raise AgentRequestFailed(
                f"The workspace agent sent an unreadable response (HTTP {response.status_code}).",
                "bad_response",
                response.status_code,
            ) from exc
        if response.status_code >= 400:
            message = str(body.get("error") or f"HTTP {response.status_code}") if isinstance(body, dict) else str(body)
            code = str(body.get("code") or "error") if isinstance(body, dict) else "error"
            if response.status_code == 404:
                raise AgentNotFound(message, code)
            raise AgentRequestFailed(message, code, response.status_code)
        return body

    # --- the WorkspaceAgent protocol ---------------------------------------------------------------

    async def ping(self, *, timeout: float = 5.0) -> bool:
        try:
            await self._request("GET", "/health", timeout=timeout)
        except (Unavailable, Unauthenticated, InvalidInput, NotFound):
            return False
        return True

    async def info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/info")
        return result

    async def read_file(self, path: str, *, offset: int = 1, limit: int | None = None) -> FileContent:
        body: dict[str, Any] = {"path": path, "offset": offset}
        if limit is not None:
            body["limit"] = limit
        return FileContent.model_validate(await self._request("POST", "/files/read", json=body))

    async def write_file(self, path: str, content: str) -> None:
        await self._request("POST", "/files/write", json={"path": path, "content": content})

    async def edit_files(self, files: list[FileEdits]) -> None:
        await self._request("POST", "/files/edit", json={"files": [f.model_dump() for f in files]})

    async def start_process(
        self,
        command: str,
        *,
        workdir: str | None = None,
        background: bool = False,
        wait: float = 0.0,
        max_output_bytes: int | None = None,
        env: dict[str, str] | None = None,
    ) -> ProcessState:
        body: dict[str, Any] = {"command": command, "background": background, "wait": wait, "env": env or {}}
        if workdir:
            body["workdir"] = workdir
        if max_output_bytes is not None:
            body["max_output_bytes"] = max_output_bytes
        return ProcessState.model_validate(await self._request("POST", "/processes", json=body, extra_timeout=wait))

    async def process_output(self, process_id: str, *, wait: float = 0.0, max_output_bytes: int | None = None) -> ProcessState:
        params: dict[str, Any] = {"wait": wait}
        if max_output_bytes is not None:
            params["max_bytes"] = max_output_bytes
        raw = await self._request("GET", f"/processes/{_segment(process_id)}", params=params, extra_timeout=wait)
        return ProcessState.model_validate(raw)

    async def list_processes(self) -> list[ProcessState]:
        raw = await self._request("GET", "/processes")
        return [ProcessState.model_validate(p) for p in raw["processes"]]

    async def signal_process(self, process_id: str, signal: Signal) -> str:
        raw = await self._request("POST", f"/processes/{_segment(process_id)}/signal", json={"signal": signal})
        return str(raw["message"])

    async def instructions(self) -> Instructions:
        return Instructions.model_validate(await self._request("GET", "/instructions", timeout=5.0))


def _segment(process_id: str) -> str:
    if not process_id or "/" in process_id or process_id in (".", ".."):
        raise InvalidInput(f"Invalid process id {process_id!r}.")
    return process_id
