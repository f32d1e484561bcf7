"""The request guard: bearer token, each path's body media type and the body size limit, as ASGI
middleware.

It runs before BentoML parses anything, so an unauthorised, oversized request or one whose body
is not the path's media type (JSON; ``application/x-npy`` on ``/forecast_batch.npy``) is
answered without being read into the service. Binary bodies keep the same size limit: one of
windows as float64 is a fraction of the same windows written as JSON.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from serving.bodies import error_response
from serving.contract import BODY_MEDIA_TYPES, OPEN_PATHS
from serving.npy import NPY_MEDIA_TYPE, NPY_PATH

# How a 415 names each media type a path takes.
_WHAT = {"application/json": "JSON", NPY_MEDIA_TYPE: "one .npy array (np.save)"}


class RequestGuard:
    """Answers 401, 415 or 413 itself, or hands the request on with its body buffered.

    A body's media type is the one ``contract.BODY_MEDIA_TYPES`` names for its path (JSON
    elsewhere); a missing ``Content-Type`` is taken for the path's.

    Health and metrics paths (``contract.OPEN_PATHS``) stay open.

    Args:
        app: The wrapped ASGI app.
        token: Required bearer token, or None for no authentication.
        max_body_bytes: Largest request body accepted.
    """

    def __init__(self, app: Any, *, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if self.token is not None:
            auth = headers.get(b"authorization")
            if auth is None:
                await _reply(
                    scope,
                    receive,
                    send,
                    401,
                    "missing bearer token (Authorization: Bearer <token>)",
                )
                return
            scheme, _, presented = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(presented, self.token):
                await _reply(scope, receive, send, 401, "invalid bearer token")
                return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            expected = BODY_MEDIA_TYPES.get(scope["path"], "application/json")
            content_type = headers.get(b"content-type", expected.encode())
            media = content_type.split(b";")[0].strip().lower().decode("latin-1")
            if media != expected:
                message = f"send {_WHAT[expected]} (Content-Type: {expected}), not {media}"
                if media == NPY_MEDIA_TYPE:
                    message += f"; a .npy body of windows goes to POST {NPY_PATH}"
                await _reply(scope, receive, send, 415, message)
                return
            declared = headers.get(b"content-length")
            if declared is not None and (
                not declared.isdigit() or int(declared) > self.max_body_bytes
            ):
                await _reply(
                    scope, receive, send, 413, self._too_large(declared.decode(errors="replace"))
                )
                return
            body = await self._read_body(receive)
            if body is None:
                await _reply(scope, receive, send, 413, self._too_large("more than that"))
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _too_large(self, size: str) -> str:
        return (
            f"request body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes "
            "(LLATA_MAX_REQUEST_BYTES)"
        )

    async def _read_body(self, receive: Any) -> bytes | None:
        """The whole body, or None once it passes the limit (chunked uploads included)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _headers(scope: MutableMapping[str, Any]) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", [])}


def _replay(body: bytes, receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A ``receive`` that hands the buffered body over once, then the client's own events."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # e.g. http.disconnect when the client goes away

    return replay


async def _reply(scope: Any, receive: Any, send: Any, status: int, message: str) -> None:
    await error_response(status, message)(scope, receive, send)
