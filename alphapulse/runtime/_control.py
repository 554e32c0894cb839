"""The control socket: a node's small JSON request/response side door.

Not the hot path: one JSON object per line each way. A request is ``{"op": NAME, ...}``; the
reply is ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. Ops are registered by the
node host (health, stats, reconfigure, snapshot, shutdown). ``request()`` is the blocking
client used by the CLI; ``request_async()`` the trio one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

log = logging.getLogger("alphapulse.control")

MAX_REQUEST_BYTES = 1 << 20
Handler = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]] | Mapping[str, Any]]


class ControlError(RuntimeError):
    """The node answered a control request with an error, or could not be reached."""


async def serve_control(path: str, handlers: Mapping[str, Handler], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve control requests on ``path`` until cancelled. Reports started once bound."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(16)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                conn, _ = await listener.accept()
                nursery.start_soon(_serve_one, trio.SocketStream(conn), handlers)
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def _serve_one(stream: trio.SocketStream, handlers: Mapping[str, Handler]) -> None:
    async with stream:
        buffer = b""
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return
            if not chunk:
                return
            buffer += chunk
            if len(buffer) > MAX_REQUEST_BYTES:
                await _reply(stream, {"ok": False, "error": "request too large"})
                return
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                reply = await _dispatch(line, handlers)
                try:
                    await _reply(stream, reply)
                except trio.BrokenResourceError:
                    return


async def _dispatch(line: bytes, handlers: Mapping[str, Handler]) -> Mapping[str, Any]:
    try:
        request = json.loads(line)
    except ValueError as exc:
        return {"ok": False, "error": f"not JSON: {exc}"}
    if not isinstance(request, dict) or not isinstance(request.get("op"), str):
        return {"ok": False, "error": 'a request is an object with a string "op"'}
    handler = handlers.get(request["op"])
    if handler is None:
        return {"ok": False, "error": f"unknown op {request['op']!r}; known: {', '.join(sorted(handlers))}"}
    try:
        result = handler(request)
        if isinstance(result, Awaitable):
            result = await result
    except (ValueError, TypeError, KeyError) as exc:  # a request the node refuses, not a node bug
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, **result}


async def _reply(stream: trio.SocketStream, reply: Mapping[str, Any]) -> None:
    await stream.send_all(json.dumps(reply, default=_json_default, sort_keys=True).encode() + b"\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def request(path: str, op: str, timeout: float = 2.0, **fields: Any) -> dict[str, Any]:
    """Blocking client: send one request, return the reply; raises ControlError on failure."""
    payload = json.dumps({"op": op, **fields}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(payload)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc}") from exc
    try:
        reply = json.loads(data)
    except ValueError as exc:
        raise ControlError(f"control socket {path}: bad reply {data[:200]!r}") from exc
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "unknown error"))
    return reply


async def request_async(path: str, op: str, **fields: Any) -> dict[str, Any]:
    """trio client for the same protocol."""
    stream = await trio.open_unix_socket(path)
    async with stream:
        await stream.send_all(json.dumps({"op": op, **fields}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "unknown error"))
    return reply
